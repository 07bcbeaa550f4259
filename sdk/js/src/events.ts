/**
 * The data of the events the conflicts worker publishes (docs/conflicts.md, "Events"),
 * typed. The envelope (`Event`) is generated; its `data` is free-form on the wire, so these
 * are narrowed by `type` with {@link isEvent}.
 */
import type { EntityKind, Event as StoredEvent, Op } from "./generated/protocol.js";
import type { EntityState } from "./store.js";

/** Which change an outcome event is about: its client id, its seq on WEDSYNC_CHANGES. */
export interface ChangeRef {
  id: string;
  seq: number;
  by: string;
}

export interface EntityEventData {
  entity: EntityKind;
  entity_id: string;
  version: number;
  fields: Record<string, unknown>;
  changed: string[];
  cause: "change" | "cascade" | "reassigned";
  change?: ChangeRef;
  scope?: { before: string | null; after: string | null };
}

export interface ConflictResolvedData {
  entity: EntityKind;
  entity_id: string;
  field: string;
  version: number;
  winner: { user_id: string; value: unknown };
  overwritten: { user_id: string | null; value: unknown };
  change: ChangeRef;
}

export type RejectReason =
  | "stale" | "deleted" | "exists" | "not_found" | "cycle" | "invalid" | "forbidden";

export interface ConflictRejectedData {
  entity: EntityKind;
  entity_id: string;
  reason: RejectReason;
  message: string;
  fields: string[];
  current: EntityState | null;
  change: ChangeRef;
}

export interface ApprovalRequestedData {
  approval_id: string;
  entity: EntityKind;
  entity_id: string;
  op: Op;
  fields: Record<string, unknown>;
  amounts: string[];
  requested_by: string;
  expires_at: string;
  change: ChangeRef;
}

export interface ApprovalDecidedData {
  approval_id: string;
  entity: EntityKind;
  entity_id: string;
  by: string;
  requested_by: string;
}

export interface TimelineCascadedData {
  entity_id: string;
  delta_seconds: number;
  shifted: string[];
  change: ChangeRef;
}

/** Event type → its data. Any other type (a chat `message`, a server event) is free-form. */
export interface EventData {
  "entity.created": EntityEventData;
  "entity.updated": EntityEventData;
  "entity.deleted": EntityEventData;
  "conflict.resolved": ConflictResolvedData;
  "conflict.rejected": ConflictRejectedData;
  "approval.requested": ApprovalRequestedData;
  "approval.granted": ApprovalDecidedData;
  "approval.denied": ApprovalDecidedData;
  "approval.expired": ApprovalDecidedData;
  "timeline.cascaded": TimelineCascadedData;
}

export type TypedEvent<T extends keyof EventData> = StoredEvent & { type: T; data: EventData[T] };

/** Narrow an event by its type: `if (isEvent(e, "conflict.resolved")) e.data.winner`. */
export function isEvent<T extends keyof EventData>(e: StoredEvent, type: T): e is TypedEvent<T> {
  return e.type === type;
}

/** An event as a room delivers it: its seq and the stored event. */
export interface ReceivedEvent {
  seq: number;
  event: StoredEvent;
}
