import type {
  ConnectionPresence,
  PresenceDiffFrame,
  UserPresence,
} from "./generated/protocol.js";

/**
 * Who is in the room, grouped by user (one entry per user, one connection per device),
 * from the welcome's snapshot and the `presence_diff` frames after it. `others` leaves out
 * this client's own connection (its session id), as the diffs do.
 */
export class PresenceStore {
  private users = new Map<string, UserPresence>();
  private self: string | undefined;
  private cached: UserPresence[] | undefined;

  /** The welcome's snapshot: replaces everything (each welcome, after a reconnect too). */
  reset(snapshot: readonly UserPresence[], ownConnection: string): void {
    this.self = ownConnection;
    this.users = new Map();
    this.join(snapshot);
    this.cached = undefined;
  }

  apply(diff: PresenceDiffFrame): void {
    this.join(diff.joins);
    this.join(diff.updates);
    for (const left of diff.leaves) {
      const user = this.users.get(left.user_id);
      if (user === undefined) continue;
      const gone = new Set(left.connections.map((c) => c.connection_id));
      user.connections = user.connections.filter((c) => !gone.has(c.connection_id));
      if (user.connections.length === 0) this.users.delete(left.user_id);
    }
    this.cached = undefined;
  }

  private join(entries: readonly UserPresence[]): void {
    for (const entry of entries) {
      const shown = entry.connections.filter((c) => c.connection_id !== this.self);
      if (shown.length === 0) continue;
      const user = this.users.get(entry.user_id);
      if (user === undefined) {
        this.users.set(entry.user_id, { ...entry, connections: shown });
        continue;
      }
      user.display_name = entry.display_name;
      user.role = entry.role;
      const byId = new Map<string, ConnectionPresence>(
        user.connections.map((c) => [c.connection_id, c]));
      for (const c of shown) byId.set(c.connection_id, c);
      user.connections = [...byId.values()].sort((a, b) => a.connected_at - b.connected_at);
    }
  }

  /** Everyone else here, by user id, each with their connections (oldest first). */
  others(): UserPresence[] {
    this.cached ??= [...this.users.values()]
      .map((u) => ({ ...u, connections: [...u.connections] }))
      .sort((a, b) => (a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0));
    return this.cached;
  }
}
