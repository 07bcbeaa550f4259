// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
export { Backoff } from "./backoff.js";
export { createClient } from "./client.js";
export { HttpError, RoomClosed, ServerError } from "./errors.js";
export * from "./events.js";
export { closeAction, splitFrames } from "./frames.js";
export * from "./generated/protocol.js";
export { watchIdle } from "./idle.js";
export { PresenceStore } from "./presence.js";
export { Room, } from "./room.js";
export { IndexedDBStorage, MemoryStorage, defaultStorage, } from "./storage.js";
export { StateStore, fold, tombstoneKey, } from "./store.js";
