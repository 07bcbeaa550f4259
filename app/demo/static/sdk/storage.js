// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
export class MemoryStorage {
    frames = new Map();
    sessions = new Map();
    async load(room) {
        const frames = [...(this.frames.get(room)?.values() ?? [])];
        return structuredClone(frames.sort((a, b) => a.order - b.order));
    }
    async put(frame) {
        let room = this.frames.get(frame.room);
        if (room === undefined) {
            room = new Map();
            this.frames.set(frame.room, room);
        }
        room.set(frame.id, structuredClone(frame));
    }
    async delete(room, id) {
        this.frames.get(room)?.delete(id);
    }
    async session(room) {
        return this.sessions.get(room);
    }
    async setSession(room, session) {
        if (session === undefined)
            this.sessions.delete(room);
        else
            this.sessions.set(room, session);
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
export class IndexedDBStorage {
    db;
    constructor(name = "wedsync", factory = globalThis.indexedDB) {
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
    async run(store, mode, act) {
        const db = await this.db;
        return new Promise((resolve, reject) => {
            const tx = db.transaction(store, mode);
            const request = act(tx.objectStore(store));
            tx.oncomplete = () => resolve(request.result);
            tx.onerror = () => reject(tx.error);
            tx.onabort = () => reject(tx.error);
        });
    }
    async load(room) {
        const frames = await this.run(FRAMES, "readonly", (s) => s.index("room").getAll(room));
        return frames.sort((a, b) => a.order - b.order);
    }
    async put(frame) {
        await this.run(FRAMES, "readwrite", (s) => s.put(frame));
    }
    async delete(room, id) {
        await this.run(FRAMES, "readwrite", (s) => s.delete([room, id]));
    }
    async session(room) {
        return this.run(SESSIONS, "readonly", (s) => s.get(room));
    }
    async setSession(room, session) {
        await this.run(SESSIONS, "readwrite", (s) => (session === undefined ? s.delete(room) : s.put(session)));
    }
    async close() {
        (await this.db).close();
    }
}
/** IndexedDB where the platform has it (browsers), else memory (Node, tests). */
export function defaultStorage() {
    return typeof globalThis.indexedDB === "undefined"
        ? new MemoryStorage()
        : new IndexedDBStorage();
}
