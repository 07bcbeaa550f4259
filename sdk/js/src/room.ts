import { Backoff } from "./backoff.js";
import { HttpError, RoomClosed, ServerError } from "./errors.js";
import type { ChangeRef, ConflictRejectedData, ReceivedEvent } from "./events.js";
import { closeAction, newId, splitFrames } from "./frames.js";
import {
  ChannelValues,
  EntityKindValues,
  OpValues,
  SUBPROTOCOL,
  TOKEN_PREFIX,
  type Access,
  type ChangeFrame,
  type Channel,
  type EditingConflictFrame,
  type EntityFields,
  type EntityKind,
  type ErrorFrame,
  type Event as StoredEvent,
  type JoinResponse,
  type MessageFrame,
  type Notification,
  type Op,
  type PeerSignalFrame,
  type PermissionsFrame,
  type PresenceFrame,
  type ResumedFrame,
  type Role,
  type ServerFrame,
  type SignalFrame,
  type UserPresence,
  type WelcomeFrame,
} from "./generated/protocol.js";
import { Emitter } from "./emitter.js";
import { PresenceStore } from "./presence.js";
import type { OutboxStorage, QueuedFrame, StoredSession } from "./storage.js";
import { StateStore, type EntitiesView, type EntityState, type EntityView, type WeddingState } from "./store.js";

/** `connecting` → `open` → (`reconnecting` → `open`)* → `closed`. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface ConnectionStatus {
  state: ConnectionState;
  /** the close code that led here (`reconnecting`, `closed`); HTTP status of a refused join */
  code?: number;
  reason?: string;
}

/** What became of a change (`room.change`): the outcome event the server sent about it. */
export type ChangeOutcome =
  | { status: "applied"; id: string; seq: number; entity: EntityState | null; event: StoredEvent }
  | {
      status: "rejected"; id: string; seq: number; reason: ConflictRejectedData["reason"];
      message: string; fields: string[]; current: EntityState | null; event: StoredEvent;
    }
  | { status: "held"; id: string; seq: number; approval_id: string; event: StoredEvent };

export interface RoomEvents {
  status: ConnectionStatus;
  /** every event of a channel this member may read, once each, in seq order */
  event: ReceivedEvent;
  /** the entities changed (an event folded, a pending change added or settled, a reload) */
  entities: EntitiesView;
  /** someone came, left or changed their presence */
  others: UserPresence[];
  notification: Notification;
  permissions: PermissionsFrame;
  editingConflict: EditingConflictFrame;
  /** another member's ephemeral signal ("typing..."): show it for a few seconds unless
   * renewed, or until `active: false` (docs/protocol.md, "Ephemeral signals") */
  signal: PeerSignalFrame;
  /** a replay after a reconnect is complete (`recovered: false`: the state was reloaded) */
  resumed: ResumedFrame;
  /** the state was (re)loaded from `/state` */
  reload: WeddingState;
  outcome: ChangeOutcome;
  /** an error frame about no frame of ours (a refused presence update, say) */
  error: ErrorFrame;
}

/** The WebSocket constructor: the browser's, Node's (22+, or 20 with
 * `--experimental-websocket`) or a compatible one such as the `ws` package's. */
export type WebSocketLike = new (url: string, protocols: string[]) => WebSocket;

/** What a room needs from its client (HTTP with the user's JWT). */
export interface RoomHost {
  join(weddingId: string): Promise<JoinResponse>;
  state(weddingId: string): Promise<WeddingState>;
  leave(weddingId: string): Promise<void>;
  WebSocket: WebSocketLike;
  storage: OutboxStorage;
  backoff: Backoff;
  /** ms between application pings; a socket that hears nothing for two of them is dropped */
  pingInterval: number;
}

const ENTITY_ID = /^[A-Za-z0-9_:.-]{1,128}$/;

/** What the server would refuse without naming the frame (it cannot decode its id) is
 * refused here, before sending, with the code the server gives it. */
function refuse(message: string): never {
  throw new ServerError("invalid", message);
}

function checkId(id: string): void {
  if (id.length < 1 || id.length > 64) refuse("a frame id is 1-64 characters");
}

const RETRYABLE = new Set(["unavailable", "overloaded", "rate_limited"]);
const REFUSED_JOIN = new Set([400, 401, 403, 404, 409, 422]);
const OPEN = 1;

interface Entry {
  queued: QueuedFrame;
  resolve?: (seq: number) => void;
  reject?: (error: Error) => void;
  attempts: number;
  timer?: ReturnType<typeof setTimeout>;
}

interface Waiting {
  resolve: (outcome: ChangeOutcome) => void;
  reject: (error: Error) => void;
  /** the ack's seq on WEDSYNC_CHANGES */
  seq?: number;
}

/**
 * One wedding room: a WebSocket kept alive across network trouble, the wedding's state,
 * who is here. Made by `client.enter(weddingId)`; it connects at once.
 */
export class Room {
  readonly weddingId: string;
  /** this member's user id, role and permissions (from the welcome; `permissions` frames) */
  userId: string | undefined;
  role: Role | undefined;
  permissions: Record<string, Access> = {};
  /** highest event seq delivered, and the epoch it belongs to */
  lastSeq: number | undefined;
  epoch: string | undefined;
  /** successful connections so far (1 + reconnects) */
  connects = 0;
  /** resolves once the room is open the first time; rejects if it closes before */
  readonly ready: Promise<void>;

  private readonly host: RoomHost;
  private readonly emitter = new Emitter<RoomEvents>();
  private readonly store = new StateStore();
  private readonly presence = new PresenceStore();
  private status: ConnectionStatus = { state: "connecting" };
  private session: StoredSession | undefined;
  private readonly outbox = new Map<string, Entry>(); // in send order
  private readonly waiting = new Map<string, Waiting>(); // changes awaiting their outcome
  private order = 0;
  private presenceSet: Omit<PresenceFrame, "type"> = {}; // what setPresence said, merged
  private ws: WebSocket | undefined;
  private abandon: ((code: number, reason: string) => void) | undefined;
  private stopped = false;
  private closedWith: RoomClosed | undefined;
  private needsReload = true;
  private reloading: StoredEvent[] | undefined; // events folded during a reload: refolded
  private wake: (() => void) | undefined;
  private readyResolve!: () => void;
  private readyReject!: (e: Error) => void;
  private readonly restored: Promise<void>;
  private isRestored = false;

  constructor(host: RoomHost, weddingId: string) {
    this.host = host;
    this.weddingId = weddingId;
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => undefined); // not every app awaits it
    this.restored = this.restore();
    void this.run();
  }

  // -- reading --------------------------------------------------------------------------

  get connectionStatus(): ConnectionStatus {
    return this.status;
  }

  /** The entities, this client's pending changes applied on top (`pending: true`). */
  get entities(): EntitiesView {
    return this.store.view();
  }

  entity<K extends EntityKind>(kind: K, entityId: string): EntityView | undefined {
    return this.store.view()[kind]?.[entityId];
  }

  /** The state as the server holds it at `lastSeq` (no pending change applied). */
  get confirmed(): EntitiesView {
    return this.store.confirmed;
  }

  /** Everyone else here, grouped by user (this connection left out). */
  get others(): UserPresence[] {
    return this.presence.others();
  }

  /** Frames sent (or waiting to be) that the server has not acknowledged yet. */
  get unacknowledged(): number {
    return this.outbox.size;
  }

  on<K extends keyof RoomEvents>(name: K, listener: (value: RoomEvents[K]) => void): () => void {
    return this.emitter.on(name, listener);
  }

  // -- writing --------------------------------------------------------------------------

  /** Publish on a channel; resolves with the event's seq once it is durable, rejects with
   * `ServerError` if refused. Queued while offline; re-sent with the same id after a
   * reconnect (or a page reload, with IndexedDB), so the server stores it once. */
  async send(channel: Channel, data: Record<string, unknown>, options: { id?: string } = {}): Promise<number> {
    const id = options.id ?? newId();
    checkId(id);
    if (!(ChannelValues as readonly string[]).includes(channel)) refuse(`unknown channel ${channel}`);
    const frame: MessageFrame = { type: "message", id, channel, data };
    return this.enqueue(frame, true);
  }

  /**
   * Create, update or delete an entity (docs/conflicts.md). Shown at once in `entities`
   * (optimistic, `pending: true`); resolves with the outcome once the server applied it,
   * rejected it (the view is rebased on the server's state: `current`) or held it for
   * approval. Rejects with `ServerError` if refused at the edge (`invalid`, `forbidden`).
   * `base_version` is the version this client holds when the change first goes out; a
   * change of an entity waits for the outcome of this client's earlier change of it.
   */
  async change<K extends EntityKind>(
    kind: K, entityId: string, op: Op, fields: EntityFields[K] = {} as EntityFields[K],
    options: { id?: string } = {},
  ): Promise<ChangeOutcome> {
    this.throwIfClosed();
    const id = options.id ?? newId();
    checkId(id);
    if (!(EntityKindValues as readonly string[]).includes(kind)) refuse(`unknown entity kind ${kind}`);
    if (!ENTITY_ID.test(entityId)) refuse(`entity id ${JSON.stringify(entityId)}: 1-128 of [A-Za-z0-9_:.-]`);
    if (!(OpValues as readonly string[]).includes(op)) refuse(`unknown op ${op}`);
    const frame: ChangeFrame = {
      type: "change", id, entity: kind, entity_id: entityId, op,
      fields: fields as Record<string, unknown>, base_version: null,
    };
    const outcome = new Promise<ChangeOutcome>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
    });
    this.store.addPending({ id, entity: kind, entity_id: entityId, op, fields: frame.fields ?? {} });
    this.emitter.emit("entities", this.store.view());
    this.enqueue(frame, false).then(
      (seq) => {
        const w = this.waiting.get(id);
        if (w !== undefined) w.seq = seq;
      },
      (error: Error) => this.settleChange(id, undefined, error),
    );
    return outcome;
  }

  /** Update this member's presence: absent fields unchanged, `editing: null` clears. */
  setPresence(update: Omit<PresenceFrame, "type">): void {
    this.throwIfClosed();
    this.presenceSet = { ...this.presenceSet, ...update };
    this.transmitText(JSON.stringify({ type: "presence", ...update }));
  }

  /** Send an ephemeral signal ("typing..." in a channel, "viewing" a target): relayed live,
   * never stored, never acked, not queued while offline. Renew it every few seconds while
   * it lasts; `active: false` ends it. */
  signal(signal: Omit<SignalFrame, "type">): void {
    this.throwIfClosed();
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify({ type: "signal", ...signal }));
  }

  /** Drop the connection and reconnect now (resuming where the room is). */
  reconnect(): void {
    this.abandon?.(4000, "reconnect asked by the app");
  }

  /** Close the room. `endSession`: also end this member's sessions of the wedding. Frames
   * not yet acknowledged stay in storage and go out on the next `enter` of the wedding. */
  async leave(options: { endSession?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake?.();
    const ws = this.ws;
    this.finish(1000, "left");
    ws?.close(1000, "left");
    if (options.endSession) {
      await this.host.leave(this.weddingId);
      await this.host.storage.setSession(this.weddingId, undefined);
    }
  }

  // -- the outbox -----------------------------------------------------------------------

  private async restore(): Promise<void> {
    const { storage } = this.host;
    this.session = await storage.session(this.weddingId);
    for (const queued of await storage.load(this.weddingId)) {
      this.order = Math.max(this.order, queued.order);
      this.outbox.set(queued.id, { queued, attempts: 0 });
      const f = queued.frame;
      if (f.type === "change") {
        this.store.addPending({
          id: f.id, entity: f.entity, entity_id: f.entity_id, op: f.op, fields: f.fields ?? {},
        });
      }
    }
    this.isRestored = true;
  }

  private async enqueue(frame: MessageFrame | ChangeFrame, own: boolean): Promise<number> {
    this.throwIfClosed();
    const existing = this.outbox.get(frame.id);
    if (existing !== undefined && own) {
      return new Promise((resolve, reject) => Object.assign(existing, { resolve, reject }));
    }
    if (!this.isRestored) await this.restored; // else on at once: counted before it returns
    this.order += 1;
    const queued: QueuedFrame = {
      room: this.weddingId, id: frame.id, order: this.order, frame, frozen: frame.type === "message",
    };
    const entry: Entry = { queued, attempts: 0 };
    const acked = new Promise<number>((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.outbox.set(frame.id, entry);
    await this.host.storage.put(queued); // before it goes out: a reload sends it again
    this.transmit(entry);
    return acked;
  }

  /** Send a queued frame if the socket is open and nothing holds it back. */
  private transmit(entry: Entry): void {
    if (!this.live() || entry.timer !== undefined) return;
    const q = entry.queued;
    if (q.frame.type === "change" && !q.frozen) {
      if (this.store.earlierOn(q.id) !== undefined) return; // after that one's outcome
      const f = q.frame;
      f.base_version = f.op === "create" ? null : (this.store.version(f.entity, f.entity_id) ?? null);
      q.frozen = true; // from now on re-sent exactly so: stored once
      void this.host.storage.put(q);
    }
    this.transmitText(JSON.stringify(q.frame));
  }

  private transmitText(text: string): void {
    if (this.live()) this.ws?.send(text);
  }

  /** Welcomed on an open socket: frames sent before the welcome would only go out twice
   * (the welcome re-sends everything unacknowledged). */
  private live(): boolean {
    return this.ws?.readyState === OPEN && this.status.state === "open";
  }

  private flush(): void {
    for (const entry of this.outbox.values()) this.transmit(entry);
  }

  private settleEntry(id: string): Entry | undefined {
    const entry = this.outbox.get(id);
    if (entry === undefined) return undefined;
    this.outbox.delete(id);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    void this.host.storage.delete(this.weddingId, id);
    return entry;
  }

  private settleChange(id: string, outcome: ChangeOutcome | undefined, error?: Error): void {
    const w = this.waiting.get(id);
    this.waiting.delete(id);
    if (this.store.removePending(id) !== undefined) this.emitter.emit("entities", this.store.view());
    if (outcome !== undefined) {
      w?.resolve(outcome);
      this.emitter.emit("outcome", outcome);
    } else if (error !== undefined) {
      w?.reject(error);
    }
    this.flush(); // a change of the same entity may go now
  }

  // -- the connection loop --------------------------------------------------------------

  private setStatus(status: ConnectionStatus): void {
    if (status.state === this.status.state && status.code === this.status.code) return;
    this.status = status;
    this.emitter.emit("status", status);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let rejoined = false; // a rejoin not yet followed by a welcome: a second one stops
    await this.restored;
    while (!this.stopped) {
      let code: number | undefined;
      let reason = "";
      try {
        if (this.session === undefined) {
          const joined = await this.host.join(this.weddingId);
          this.session = {
            room: this.weddingId, session_token: joined.session_token,
            session_id: joined.session_id, websocket_url: joined.websocket_url,
          };
          await this.host.storage.setSession(this.weddingId, this.session);
        }
        if (this.needsReload) await this.reload();
        if (this.stopped) return;
        const closed = await this.connect(this.session);
        ({ code, reason } = closed);
        if (closed.welcomed) {
          attempt = 0;
          rejoined = false;
        }
      } catch (error) {
        if (error instanceof HttpError && REFUSED_JOIN.has(error.status)) {
          this.finish(error.status, error.message);
          return;
        }
        reason = String(error); // network, 5xx, 429: try again later
      }
      if (this.stopped) return;
      if (code !== undefined) {
        const action = closeAction(code);
        if (action === "stop" || (action === "rejoin" && rejoined)) {
          this.finish(code, reason);
          return;
        }
        if (action === "rejoin") {
          // the session is gone: join again (with a fresh user token) and resume
          rejoined = true;
          this.session = undefined;
          await this.host.storage.setSession(this.weddingId, undefined);
        }
      }
      const status: ConnectionStatus = { state: "reconnecting", reason };
      if (code !== undefined) status.code = code;
      this.setStatus(status);
      await this.sleep(this.host.backoff.delay(attempt));
      attempt += 1;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async reload(): Promise<void> {
    this.reloading = [];
    try {
      const snapshot = await this.host.state(this.weddingId);
      this.store.load(snapshot.entities);
      for (const event of this.reloading) this.store.fold(event); // arrived meanwhile
      if (this.lastSeq === undefined || this.epoch !== snapshot.epoch) {
        this.lastSeq = snapshot.seq; // first load (or a new epoch): live from here
        this.epoch = snapshot.epoch;
      }
      this.needsReload = false;
      this.emitter.emit("reload", snapshot);
      this.emitter.emit("entities", this.store.view());
    } finally {
      this.reloading = undefined;
    }
  }

  /** One socket, from open to close: resolves with its close code once it is gone. */
  private connect(session: StoredSession): Promise<{ code: number; reason: string; welcomed: boolean }> {
    return new Promise((resolve) => {
      const params = new URLSearchParams({ batch: "1" });
      if (this.lastSeq !== undefined) {
        params.set("after_seq", String(this.lastSeq));
        if (this.epoch !== undefined) params.set("epoch", this.epoch);
      }
      // the token travels in Sec-WebSocket-Protocol, never in the URL (logs keep URLs)
      const ws = new this.host.WebSocket(`${session.websocket_url}?${params}`,
        [SUBPROTOCOL, TOKEN_PREFIX + session.session_token]);
      this.ws = ws;
      let welcomed = false;
      let heard = Date.now();
      let ended = false;
      const ping = setInterval(() => {
        if (Date.now() - heard > 2 * this.host.pingInterval) {
          end(4000, "no answer to pings"); // a dead network: do not wait for TCP
        } else if (welcomed) {
          this.transmitText('{"type":"ping"}'); // also keeps an idle session alive
        }
      }, this.host.pingInterval);
      const end = (code: number, reason: string): void => {
        if (ended) return;
        ended = true;
        clearInterval(ping);
        ws.onmessage = ws.onclose = ws.onerror = null;
        if (this.ws === ws) this.ws = undefined;
        this.abandon = undefined;
        if (ws.readyState <= OPEN) ws.close(code >= 3000 && code <= 4999 ? code : 1000, reason);
        resolve({ code, reason, welcomed });
      };
      this.abandon = end;
      ws.onmessage = (message: MessageEvent) => {
        heard = Date.now();
        if (typeof message.data !== "string") return;
        for (const frame of splitFrames(message.data)) {
          if (ended) return;
          if (frame.type === "welcome") welcomed = true;
          this.handle(frame, end);
        }
      };
      ws.onclose = (event: CloseEvent) => end(event.code, event.reason);
      ws.onerror = () => {
        // browsers send a close event after an error; Node 20's WebSocket does not when
        // the connection is refused (it stays CONNECTING): do not wait for one there
        if (ws.readyState !== OPEN) end(1006, "connection failed");
        else setTimeout(() => end(1006, "socket error"), 2000);
      };
    });
  }

  private handle(frame: ServerFrame, end: (code: number, reason: string) => void): void {
    switch (frame.type) {
      case "welcome":
        return this.welcome(frame);
      case "event":
        return this.event(frame.seq, frame.event);
      case "ack": {
        const entry = this.settleEntry(frame.id);
        entry?.resolve?.(frame.seq);
        return;
      }
      case "error":
        return this.error(frame);
      case "resumed":
        this.epoch = frame.epoch;
        if (!frame.recovered) {
          // events after our seq are gone (or another epoch): reload, live from last_seq
          this.lastSeq = frame.last_seq;
          this.needsReload = true;
          this.reload().catch(() => end(4000, "state reload failed"));
        }
        this.emitter.emit("resumed", frame);
        return;
      case "presence_diff":
        this.presence.apply(frame);
        this.emitter.emit("others", this.presence.others());
        return;
      case "editing_conflict":
        this.emitter.emit("editingConflict", frame);
        return;
      case "peer_signal":
        this.emitter.emit("signal", frame);
        return;
      case "notification":
        this.emitter.emit("notification", frame.notification);
        return;
      case "permissions":
        this.role = frame.role;
        this.permissions = frame.permissions;
        this.emitter.emit("permissions", frame);
        return;
      case "pong":
        return;
    }
  }

  private welcome(frame: WelcomeFrame): void {
    this.userId = frame.user_id;
    this.role = frame.role;
    this.permissions = frame.permissions;
    if (this.lastSeq === undefined) {
      this.lastSeq = frame.last_seq;
      this.epoch = frame.epoch;
    }
    this.connects += 1;
    this.presence.reset(frame.presence, frame.session_id);
    this.setStatus({ state: "open" });
    this.readyResolve();
    this.emitter.emit("others", this.presence.others());
    if (Object.keys(this.presenceSet).length > 0) {
      // a new socket starts from the server's view of this device: tell it again
      this.transmitText(JSON.stringify({ type: "presence", ...this.presenceSet }));
    }
    this.flush(); // what was not acknowledged, in order, with the same ids
  }

  private event(seq: number, event: StoredEvent): void {
    if (this.lastSeq !== undefined && seq <= this.lastSeq) return; // delivered already
    this.lastSeq = seq;
    this.reloading?.push(event);
    this.store.fold(event);
    this.emitter.emit("event", { seq, event });
    const outcome = this.outcomeOf(seq, event);
    if (outcome !== undefined) this.settleChange(outcome.id, outcome);
    else if (event.type.startsWith("entity.")) this.emitter.emit("entities", this.store.view());
  }

  /** The outcome of one of our changes that this event is, if it is one. */
  private outcomeOf(seq: number, event: StoredEvent): ChangeOutcome | undefined {
    const data = event.data as { change?: ChangeRef; entity?: string; entity_id?: string };
    const ref = data.change;
    if (ref === undefined || ref.by !== this.userId || !this.waiting.has(ref.id)) return undefined;
    const mine = this.store.pendingChanges().find((c) => c.id === ref.id);
    if (mine !== undefined && (data.entity !== mine.entity || data.entity_id !== mine.entity_id)) {
      return undefined; // a cascade onto another item: the outcome is the item's own event
    }
    if (event.type.startsWith("entity.")) {
      const kind = data.entity ?? "", eid = data.entity_id ?? "";
      const entity = this.store.confirmed[kind]?.[eid] ?? null;
      return { status: "applied", id: ref.id, seq, entity, event };
    }
    if (event.type === "conflict.rejected") {
      const d = event.data as unknown as ConflictRejectedData;
      return {
        status: "rejected", id: ref.id, seq, reason: d.reason, message: d.message,
        fields: d.fields, current: d.current, event,
      };
    }
    if (event.type === "approval.requested") {
      const approval = String((event.data as { approval_id?: unknown }).approval_id);
      return { status: "held", id: ref.id, seq, approval_id: approval, event };
    }
    return undefined; // conflict.resolved, timeline.cascaded: the entity event follows
  }

  private error(frame: ErrorFrame): void {
    const entry = frame.id == null ? undefined : this.outbox.get(frame.id);
    if (entry === undefined) {
      this.emitter.emit("error", frame);
      return;
    }
    if (RETRYABLE.has(frame.code)) {
      // not stored: the same frame again later, no sooner than the server says
      const wait = Math.max((frame.retry_after ?? 0) * 1000, 0) + this.host.backoff.delay(entry.attempts);
      entry.attempts += 1;
      entry.timer = setTimeout(() => {
        entry.timer = undefined;
        this.transmit(entry);
      }, wait);
      return;
    }
    this.settleEntry(entry.queued.id);
    entry.reject?.(new ServerError(frame.code, frame.message));
  }

  private throwIfClosed(): void {
    if (this.closedWith !== undefined) throw this.closedWith;
  }

  private finish(code: number, reason: string): void {
    if (this.closedWith !== undefined) return;
    this.stopped = true;
    this.closedWith = new RoomClosed(code, reason);
    this.abandon?.(code, reason);
    this.setStatus({ state: "closed", code, reason });
    this.readyReject(this.closedWith);
    for (const entry of this.outbox.values()) {
      if (entry.timer !== undefined) clearTimeout(entry.timer);
      entry.reject?.(this.closedWith);
    }
    this.outbox.clear(); // storage keeps them for the next enter
    for (const [id] of this.waiting) this.settleChange(id, undefined, this.closedWith);
  }
}
