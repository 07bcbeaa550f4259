// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
const SERVER_TYPES = new Set([
    "welcome", "event", "ack", "error", "resumed", "pong", "presence_diff",
    "editing_conflict", "notification", "permissions", "peer_signal",
]);
/**
 * The frames of one WebSocket message. With `batch=1` the server sends what it had queued
 * as newline-separated JSON frames (frames never hold a raw newline, so the split is
 * exact). A frame this client cannot read (not JSON, an unknown type) is left out.
 */
export function splitFrames(data) {
    const frames = [];
    for (const line of data.split("\n")) {
        if (line === "")
            continue;
        try {
            const frame = JSON.parse(line);
            if (typeof frame === "object" && frame !== null && SERVER_TYPES.has(String(frame.type))) {
                frames.push(frame);
            }
        }
        catch {
            // not JSON: ignored, as the Python client ignores what it cannot decode
        }
    }
    return frames;
}
export function closeAction(code) {
    // the session is gone (unknown, expired, ended): a new join gets a new one
    if (code === 4500 || code === 4504)
        return "rejoin";
    // 4500-4999: do not reconnect; 1008 (policy violation) likewise
    if ((code >= 4500 && code <= 4999) || code === 1008)
        return "stop";
    return "reconnect"; // 4000-4499, 1001, 1006 (network), 1011, 1012 (restart), ...
}
let counter = 0;
/** A client id for a frame (1-64 chars): random, so ids never repeat across reloads. */
export function newId() {
    const crypto = globalThis.crypto;
    if (crypto?.randomUUID)
        return crypto.randomUUID().replaceAll("-", "");
    counter += 1;
    return `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}${counter}`;
}
