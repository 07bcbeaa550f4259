import {
  DEFAULTS,
  ENTITY_EVENTS,
  type EntityKind,
  type Event as StoredEvent,
  type Op,
} from "./generated/protocol.js";

/** One entity as the server holds it: `entities[kind][entity_id]`. */
export interface EntityState {
  version: number;
  fields: Record<string, unknown>;
}

/** kind → entity id → entity: the shape of `/state`'s `entities`. */
export type Entities = Record<string, Record<string, EntityState>>;

/** Deleted entities' last versions, keyed by {@link tombstoneKey}. */
export type Tombstones = Map<string, number>;

/** `GET /api/weddings/{id}/state`. */
export interface WeddingState {
  seq: number;
  epoch: string;
  entities: Entities;
}

export function tombstoneKey(kind: string, entityId: string): string {
  return `${kind}/${entityId}`; // kinds hold no "/": the first one splits it exactly
}

const ENTITY_EVENT_TYPES: ReadonlySet<string> = new Set(ENTITY_EVENTS);

/**
 * Apply one stored event to a client's state: exactly `streams/state.py: fold` (the
 * vectors in test/vectors/fold.json, made by the Python fold, check it). Events carry the
 * resulting fields and a per-entity version that only grows, so an event at or below the
 * version held (a duplicate, or one already in a loaded snapshot) is skipped.
 */
export function fold(state: Entities, tombstones: Tombstones, event: StoredEvent): void {
  if (!ENTITY_EVENT_TYPES.has(event.type)) return;
  const d = event.data as { entity: string; entity_id: string; version: number; fields: Record<string, unknown> };
  const kind = d.entity;
  const items = (state[kind] ??= {});
  const held = items[d.entity_id]?.version ?? tombstones.get(tombstoneKey(kind, d.entity_id)) ?? 0;
  if (d.version <= held) return;
  if (event.type === "entity.deleted") {
    delete items[d.entity_id];
    tombstones.set(tombstoneKey(kind, d.entity_id), d.version);
  } else {
    items[d.entity_id] = { version: d.version, fields: d.fields };
  }
}

/** A change of this client's not yet applied by the server: shown on top of the state. */
export interface PendingChange {
  id: string;
  entity: EntityKind;
  entity_id: string;
  op: Op;
  fields: Record<string, unknown>;
}

/** An entity as the room shows it: `pending` while a change of this client is on it. */
export interface EntityView extends EntityState {
  pending?: true;
}

export type EntitiesView = Record<string, Record<string, EntityView>>;

/**
 * The wedding's state in a room: the *confirmed* state (the `/state` snapshot with the
 * events after it folded in, exactly as the server holds it at the last seq) and this
 * client's pending changes applied on top, in order (optimistic). A pending change leaves
 * when its outcome arrives: applied (the event brings the server's fields), rejected (it
 * is dropped: the view is rebased on the confirmed state) or held for approval.
 */
export class StateStore {
  confirmed: Entities = {};
  tombstones: Tombstones = new Map();
  private pending: PendingChange[] = [];
  private cached: EntitiesView | undefined;

  load(snapshot: Entities): void {
    this.confirmed = structuredClone(snapshot);
    this.tombstones = new Map();
    this.cached = undefined;
  }

  fold(event: StoredEvent): void {
    fold(this.confirmed, this.tombstones, event);
    if (ENTITY_EVENT_TYPES.has(event.type)) this.cached = undefined;
  }

  addPending(change: PendingChange): void {
    this.pending.push(change);
    this.cached = undefined;
  }

  removePending(id: string): PendingChange | undefined {
    const at = this.pending.findIndex((c) => c.id === id);
    if (at < 0) return undefined;
    const [removed] = this.pending.splice(at, 1);
    this.cached = undefined;
    return removed;
  }

  pendingChanges(): readonly PendingChange[] {
    return this.pending;
  }

  /** A pending change on this entity sent before `id`, if any. */
  earlierOn(id: string): PendingChange | undefined {
    const at = this.pending.findIndex((c) => c.id === id);
    const me = this.pending[at];
    if (me === undefined) return undefined;
    return this.pending.slice(0, at).find(
      (c) => c.entity === me.entity && c.entity_id === me.entity_id);
  }

  version(kind: string, entityId: string): number | undefined {
    return this.confirmed[kind]?.[entityId]?.version;
  }

  /** The confirmed state with the pending changes applied (computed once per change). */
  view(): EntitiesView {
    if (this.cached !== undefined) return this.cached;
    const view: EntitiesView = {};
    for (const [kind, items] of Object.entries(this.confirmed)) view[kind] = { ...items };
    for (const c of this.pending) {
      const items = (view[c.entity] ??= {});
      const current = items[c.entity_id];
      if (c.op === "delete") {
        delete items[c.entity_id];
      } else if (c.op === "create") {
        // as the server fills it in; version 0 until the server gives it one
        items[c.entity_id] = {
          version: current?.version ?? 0,
          fields: { ...structuredClone(DEFAULTS[c.entity]), ...c.fields },
          pending: true,
        };
      } else if (current !== undefined) {
        items[c.entity_id] = {
          version: current.version, fields: { ...current.fields, ...c.fields }, pending: true,
        };
      }
    }
    this.cached = view;
    return view;
  }
}
