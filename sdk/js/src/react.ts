/**
 * React bindings, without a dependency on React: pass your React in once.
 *
 *     import * as React from "react";
 *     import { createRoomHooks } from "@wedsync/client/react";
 *     export const { useRoom, useOthers, useEntities, useConnectionState } = createRoomHooks(React);
 *
 * Each hook reads one of the room's snapshots through `useSyncExternalStore`; a snapshot
 * is a new object only when it changed, so components re-render only then.
 */
import type { Client } from "./client.js";
import type { UserPresence } from "./generated/protocol.js";
import type { ConnectionStatus, Room, RoomEvents } from "./room.js";
import type { EntitiesView } from "./store.js";

/** The part of React the hooks use (React 18+). */
export interface ReactLike {
  useSyncExternalStore<T>(subscribe: (onChange: () => void) => () => void, getSnapshot: () => T): T;
  useMemo<T>(make: () => T, deps: readonly unknown[]): T;
}

/** A room value as an external store: `subscribe` to an event, read with `getSnapshot`. */
export function roomSnapshot<T>(room: Room, event: keyof RoomEvents, read: (room: Room) => T) {
  return {
    subscribe: (onChange: () => void) => room.on(event, onChange),
    getSnapshot: () => read(room),
  };
}

export function createRoomHooks(react: ReactLike) {
  function use<T>(room: Room, event: keyof RoomEvents, read: (room: Room) => T): T {
    const store = react.useMemo(() => roomSnapshot(room, event, read), [room]);
    return react.useSyncExternalStore(store.subscribe, store.getSnapshot);
  }
  return {
    /** The wedding's room (entered once per client and wedding). */
    useRoom: (client: Client, weddingId: string): Room =>
      react.useMemo(() => client.enter(weddingId), [client, weddingId]),
    useConnectionState: (room: Room): ConnectionStatus =>
      use(room, "status", (r) => r.connectionStatus),
    useOthers: (room: Room): UserPresence[] => use(room, "others", (r) => r.others),
    useEntities: (room: Room): EntitiesView => use(room, "entities", (r) => r.entities),
  };
}
