// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
/**
 * Who is in the room, grouped by user (one entry per user, one connection per device),
 * from the welcome's snapshot and the `presence_diff` frames after it. `others` leaves out
 * this client's own connection (its session id), as the diffs do.
 */
export class PresenceStore {
    users = new Map();
    self;
    cached;
    /** The welcome's snapshot: replaces everything (each welcome, after a reconnect too). */
    reset(snapshot, ownConnection) {
        this.self = ownConnection;
        this.users = new Map();
        this.join(snapshot);
        this.cached = undefined;
    }
    apply(diff) {
        this.join(diff.joins);
        this.join(diff.updates);
        for (const left of diff.leaves) {
            const user = this.users.get(left.user_id);
            if (user === undefined)
                continue;
            const gone = new Set(left.connections.map((c) => c.connection_id));
            user.connections = user.connections.filter((c) => !gone.has(c.connection_id));
            if (user.connections.length === 0)
                this.users.delete(left.user_id);
        }
        this.cached = undefined;
    }
    join(entries) {
        for (const entry of entries) {
            const shown = entry.connections.filter((c) => c.connection_id !== this.self);
            if (shown.length === 0)
                continue;
            const user = this.users.get(entry.user_id);
            if (user === undefined) {
                this.users.set(entry.user_id, { ...entry, connections: shown });
                continue;
            }
            user.display_name = entry.display_name;
            user.role = entry.role;
            const byId = new Map(user.connections.map((c) => [c.connection_id, c]));
            for (const c of shown)
                byId.set(c.connection_id, c);
            user.connections = [...byId.values()].sort((a, b) => a.connected_at - b.connected_at);
        }
    }
    /** Everyone else here, by user id, each with their connections (oldest first). */
    others() {
        this.cached ??= [...this.users.values()]
            .map((u) => ({ ...u, connections: [...u.connections] }))
            .sort((a, b) => (a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0));
        return this.cached;
    }
}
