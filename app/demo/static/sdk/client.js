// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
import { Backoff } from "./backoff.js";
import { HttpError } from "./errors.js";
import { Room } from "./room.js";
import { defaultStorage } from "./storage.js";
export function createClient(options) {
    const base = options.baseUrl.replace(/\/+$/, "");
    const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const WS = options.WebSocket ?? globalThis.WebSocket;
    const rooms = new Map();
    let storage = options.storage;
    const backoff = new Backoff(options.backoff);
    async function request(method, path, body) {
        const headers = {
            Authorization: `Bearer ${await options.getToken()}`,
        };
        if (body !== undefined)
            headers["Content-Type"] = "application/json";
        const init = { method, headers };
        if (body !== undefined)
            init.body = JSON.stringify(body);
        const response = await doFetch(`${base}${path}`, init);
        const text = await response.text();
        if (!response.ok) {
            let code = "http_error", message = text.slice(0, 200);
            try {
                ({ code, message } = JSON.parse(text));
            }
            catch {
                // not the API's error body (a proxy's page): keep the text
            }
            throw new HttpError(response.status, code, message);
        }
        return (text === "" ? undefined : JSON.parse(text));
    }
    function host() {
        if (WS === undefined) {
            throw new Error("no WebSocket here: pass createClient({ WebSocket }) (Node 20: run with "
                + "--experimental-websocket, or use the `ws` package)");
        }
        storage ??= defaultStorage();
        return {
            join: (id) => request("POST", `/api/collaboration/join/${encodeURIComponent(id)}`),
            state: (id) => request("GET", `/api/weddings/${encodeURIComponent(id)}/state`),
            leave: (id) => request("DELETE", `/api/collaboration/join/${encodeURIComponent(id)}`),
            WebSocket: WS,
            storage,
            backoff,
            pingInterval: options.pingInterval ?? 25_000,
        };
    }
    return {
        enter(weddingId) {
            const open = rooms.get(weddingId);
            if (open !== undefined && open.connectionStatus.state !== "closed")
                return open;
            const room = new Room(host(), weddingId);
            rooms.set(weddingId, room);
            return room;
        },
        request,
        async close() {
            await Promise.all([...rooms.values()].map((r) => r.leave()));
            rooms.clear();
        },
    };
}
