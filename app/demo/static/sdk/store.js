// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
import { DEFAULTS, ENTITY_EVENTS, } from "./generated/protocol.js";
export function tombstoneKey(kind, entityId) {
    return `${kind}/${entityId}`; // kinds hold no "/": the first one splits it exactly
}
const ENTITY_EVENT_TYPES = new Set(ENTITY_EVENTS);
/**
 * Apply one stored event to a client's state: exactly `streams/state.py: fold` (the
 * vectors in test/vectors/fold.json, made by the Python fold, check it). Events carry the
 * resulting fields and a per-entity version that only grows, so an event at or below the
 * version held (a duplicate, or one already in a loaded snapshot) is skipped.
 */
export function fold(state, tombstones, event) {
    if (!ENTITY_EVENT_TYPES.has(event.type))
        return;
    const d = event.data;
    const kind = d.entity;
    const items = (state[kind] ??= {});
    const held = items[d.entity_id]?.version ?? tombstones.get(tombstoneKey(kind, d.entity_id)) ?? 0;
    if (d.version <= held)
        return;
    if (event.type === "entity.deleted") {
        delete items[d.entity_id];
        tombstones.set(tombstoneKey(kind, d.entity_id), d.version);
    }
    else {
        items[d.entity_id] = { version: d.version, fields: d.fields };
    }
}
/**
 * The wedding's state in a room: the *confirmed* state (the `/state` snapshot with the
 * events after it folded in, exactly as the server holds it at the last seq) and this
 * client's pending changes applied on top, in order (optimistic). A pending change leaves
 * when its outcome arrives: applied (the event brings the server's fields), rejected (it
 * is dropped: the view is rebased on the confirmed state) or held for approval.
 */
export class StateStore {
    confirmed = {};
    tombstones = new Map();
    pending = [];
    cached;
    load(snapshot) {
        this.confirmed = structuredClone(snapshot);
        this.tombstones = new Map();
        this.cached = undefined;
    }
    fold(event) {
        fold(this.confirmed, this.tombstones, event);
        if (ENTITY_EVENT_TYPES.has(event.type))
            this.cached = undefined;
    }
    addPending(change) {
        this.pending.push(change);
        this.cached = undefined;
    }
    removePending(id) {
        const at = this.pending.findIndex((c) => c.id === id);
        if (at < 0)
            return undefined;
        const [removed] = this.pending.splice(at, 1);
        this.cached = undefined;
        return removed;
    }
    pendingChanges() {
        return this.pending;
    }
    /** A pending change on this entity sent before `id`, if any. */
    earlierOn(id) {
        const at = this.pending.findIndex((c) => c.id === id);
        const me = this.pending[at];
        if (me === undefined)
            return undefined;
        return this.pending.slice(0, at).find((c) => c.entity === me.entity && c.entity_id === me.entity_id);
    }
    version(kind, entityId) {
        return this.confirmed[kind]?.[entityId]?.version;
    }
    /** The confirmed state with the pending changes applied (computed once per change). */
    view() {
        if (this.cached !== undefined)
            return this.cached;
        const view = {};
        for (const [kind, items] of Object.entries(this.confirmed))
            view[kind] = { ...items };
        for (const c of this.pending) {
            const items = (view[c.entity] ??= {});
            const current = items[c.entity_id];
            if (c.op === "delete") {
                delete items[c.entity_id];
            }
            else if (c.op === "create") {
                // as the server fills it in; version 0 until the server gives it one
                items[c.entity_id] = {
                    version: current?.version ?? 0,
                    fields: { ...structuredClone(DEFAULTS[c.entity]), ...c.fields },
                    pending: true,
                };
            }
            else if (current !== undefined) {
                items[c.entity_id] = {
                    version: current.version, fields: { ...current.fields, ...c.fields }, pending: true,
                };
            }
        }
        this.cached = view;
        return view;
    }
}
