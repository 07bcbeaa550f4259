import { Backoff, type BackoffOptions } from "./backoff.js";
import { HttpError } from "./errors.js";
import type { JoinResponse } from "./generated/protocol.js";
import { Room, type RoomHost, type WebSocketLike } from "./room.js";
import { defaultStorage, type OutboxStorage } from "./storage.js";
import type { WeddingState } from "./store.js";

export interface ClientOptions {
  /** The API's base URL, e.g. `https://api.example.com` (no trailing path). */
  baseUrl: string;
  /** The user's JWT (`Authorization: Bearer`). Called for every HTTP request, so a fresh
   * one is used when a room joins again after its session ended. */
  getToken: () => string | Promise<string>;
  /** The WebSocket constructor (default: the global one). */
  WebSocket?: WebSocketLike;
  /** `fetch` (default: the global one). */
  fetch?: typeof fetch;
  /** Where unacknowledged frames and sessions survive a reload (default: IndexedDB where
   * present, else memory). */
  storage?: OutboxStorage;
  /** Reconnect waits (ms; full jitter). Default `{ base: 250, cap: 15000 }`. */
  backoff?: BackoffOptions;
  /** ms between application pings (default 25 000). */
  pingInterval?: number;
}

export interface Client {
  /** The room of a wedding (one per wedding and client): joins and connects at once. */
  enter(weddingId: string): Room;
  /** `fetch` an API path with the user's JWT; the JSON body, or `HttpError`. */
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
  /** Leave every room. */
  close(): Promise<void>;
}

export function createClient(options: ClientOptions): Client {
  const base = options.baseUrl.replace(/\/+$/, "");
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketLike }).WebSocket;
  const rooms = new Map<string, Room>();
  let storage: OutboxStorage | undefined = options.storage;
  const backoff = new Backoff(options.backoff);

  async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${await options.getToken()}`,
    };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await doFetch(`${base}${path}`, init);
    const text = await response.text();
    if (!response.ok) {
      let code = "http_error", message = text.slice(0, 200);
      try {
        ({ code, message } = JSON.parse(text) as { code: string; message: string });
      } catch {
        // not the API's error body (a proxy's page): keep the text
      }
      throw new HttpError(response.status, code, message);
    }
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  function host(): RoomHost {
    if (WS === undefined) {
      throw new Error("no WebSocket here: pass createClient({ WebSocket }) (Node 20: run with "
        + "--experimental-websocket, or use the `ws` package)");
    }
    storage ??= defaultStorage();
    return {
      join: (id) => request<JoinResponse>("POST", `/api/collaboration/join/${encodeURIComponent(id)}`),
      state: (id) => request<WeddingState>("GET", `/api/weddings/${encodeURIComponent(id)}/state`),
      leave: (id) => request<void>("DELETE", `/api/collaboration/join/${encodeURIComponent(id)}`),
      WebSocket: WS,
      storage,
      backoff,
      pingInterval: options.pingInterval ?? 25_000,
    };
  }

  return {
    enter(weddingId: string): Room {
      const open = rooms.get(weddingId);
      if (open !== undefined && open.connectionStatus.state !== "closed") return open;
      const room = new Room(host(), weddingId);
      rooms.set(weddingId, room);
      return room;
    },
    request,
    async close(): Promise<void> {
      await Promise.all([...rooms.values()].map((r) => r.leave()));
      rooms.clear();
    },
  };
}
