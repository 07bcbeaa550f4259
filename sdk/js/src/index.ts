export { Backoff, type BackoffOptions } from "./backoff.js";
export { createClient, type Client, type ClientOptions } from "./client.js";
export { HttpError, RoomClosed, ServerError } from "./errors.js";
export * from "./events.js";
export { closeAction, splitFrames, type CloseAction } from "./frames.js";
export * from "./generated/protocol.js";
export { watchIdle, type IdleOptions, type PresenceTarget } from "./idle.js";
export { PresenceStore } from "./presence.js";
export {
  Room,
  type ChangeOutcome,
  type ConnectionState,
  type ConnectionStatus,
  type RoomEvents,
  type WebSocketLike,
} from "./room.js";
export {
  IndexedDBStorage,
  MemoryStorage,
  defaultStorage,
  type OutboxStorage,
  type QueuedFrame,
  type StoredSession,
} from "./storage.js";
export {
  StateStore,
  fold,
  tombstoneKey,
  type Entities,
  type EntitiesView,
  type EntityState,
  type EntityView,
  type PendingChange,
  type Tombstones,
  type WeddingState,
} from "./store.js";
