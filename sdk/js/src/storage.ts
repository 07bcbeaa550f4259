import type { ChangeFrame, MessageFrame } from "./generated/protocol.js";

/** A frame sent (or to be sent) and not yet acknowledged: re-sent with the same id. */
export interface QueuedFrame {
  /** the room (wedding id) it belongs to */
  room: string;
  /** the frame's client id */
  id: string;
  /** order of sending within the room */
  order: number;
  frame: MessageFrame | ChangeFrame;
  /** a change's `base_version` is fixed when it first goes out; false until then */
  frozen: boolean;
}

/** The session a room's queued frames were sent in: the server deduplicates by session
 * and id, so after a page reload the same session is used again while it lives. */
export interface StoredSession {
  room: string;
  session_token: string;
  session_id: string;
  websocket_url: string;
}

/**
 * Where a room keeps what must survive a page reload: its unacknowledged frames and its
 * session. `MemoryStorage` (the default without IndexedDB) survives only the page;
 * `IndexedDBStorage` survives reloads. Any other store (React Native's AsyncStorage, a
 * file) can implement these five methods.
 */
export interface OutboxStorage {
  load(room: string): Promise<QueuedFrame[]>;
  put(frame: QueuedFrame): Promise<void>;
  delete(room: string, id: string): Promise<void>;
  session(room: string): Promise<StoredSession | undefined>;
  setSession(room: string, session: StoredSession | undefined): Promise<void>;
}

export class MemoryStorage implements OutboxStorage {
  private readonly frames = new Map<string, Map<string, QueuedFrame>>();
  private readonly sessions = new Map<string, StoredSession>();

  async load(room: string): Promise<QueuedFrame[]> {
    const frames = [...(this.frames.get(room)?.values() ?? [])];
    return structuredClone(frames.sort((a, b) => a.order - b.order));
  }

  async put(frame: QueuedFrame): Promise<void> {
    let room = this.frames.get(frame.room);
    if (room === undefined) {
      room = new Map();
      this.frames.set(frame.room, room);
    }
    room.set(frame.id, structuredClone(frame));
  }

  async delete(room: string, id: string): Promise<void> {
    this.frames.get(room)?.delete(id);
  }

  async session(room: string): Promise<StoredSession | undefined> {
    return this.sessions.get(room);
  }

  async setSession(room: string, session: StoredSession | undefined): Promise<void> {
    if (session === undefined) this.sessions.delete(room);
    else this.sessions.set(room, session);
  }
}

const FRAMES = "frames";
const SESSIONS = "sessions";

/**
 * The outbox in IndexedDB (database `wedsync`, by default): frames keyed by room and id,
 * sessions by room. Note: the session token is kept there too (it opens live sessions
 * of this wedding until it expires or the user leaves); use `MemoryStorage` where that
 * is not acceptable.
 */
export class IndexedDBStorage implements OutboxStorage {
  private readonly db: Promise<IDBDatabase>;

  constructor(name = "wedsync", factory: IDBFactory = globalThis.indexedDB) {
    this.db = new Promise((resolve, reject) => {
      const open = factory.open(name, 1);
      open.onupgradeneeded = () => {
        open.result.createObjectStore(FRAMES, { keyPath: ["room", "id"] })
          .createIndex("room", "room");
        open.result.createObjectStore(SESSIONS, { keyPath: "room" });
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }

  private async run<T>(
    store: string, mode: IDBTransactionMode, act: (s: IDBObjectStore) => IDBRequest<T>,
  ): Promise<T> {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const request = act(tx.objectStore(store));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async load(room: string): Promise<QueuedFrame[]> {
    const frames = await this.run(FRAMES, "readonly",
      (s) => s.index("room").getAll(room) as IDBRequest<QueuedFrame[]>);
    return frames.sort((a, b) => a.order - b.order);
  }

  async put(frame: QueuedFrame): Promise<void> {
    await this.run(FRAMES, "readwrite", (s) => s.put(frame));
  }

  async delete(room: string, id: string): Promise<void> {
    await this.run(FRAMES, "readwrite", (s) => s.delete([room, id]));
  }

  async session(room: string): Promise<StoredSession | undefined> {
    return this.run(SESSIONS, "readonly",
      (s) => s.get(room) as IDBRequest<StoredSession | undefined>);
  }

  async setSession(room: string, session: StoredSession | undefined): Promise<void> {
    await this.run<unknown>(SESSIONS, "readwrite",
      (s) => (session === undefined ? s.delete(room) : s.put(session)) as IDBRequest<unknown>);
  }

  async close(): Promise<void> {
    (await this.db).close();
  }
}

/** IndexedDB where the platform has it (browsers), else memory (Node, tests). */
export function defaultStorage(): OutboxStorage {
  return typeof globalThis.indexedDB === "undefined"
    ? new MemoryStorage()
    : new IndexedDBStorage();
}
