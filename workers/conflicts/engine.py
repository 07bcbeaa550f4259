"""Applying one change to a wedding's state: the conflict rules, as plain functions.

No I/O here: the worker loads the entities a change needs into a :class:`View`, calls
:func:`apply_change`, then writes ``Outcome.writes`` and publishes ``Outcome.events`` in
order. Same inputs, same outcome, which is what makes a redelivered change safe.

Rules (docs/conflicts.md):

* a stale change touching only fields nobody changed since its base version merges;
* the same field changed concurrently: the later change in stream order wins and the
  overwritten author gets ``conflict.resolved``, unless the field's policy is ``reject``
  (timeline times on the wedding day): then the change is refused (``conflict.rejected``);
* delete wins over concurrent updates; later updates of a deleted entity are rejected;
* budget amounts moved by more than the threshold by anyone but the couple wait for a
  couple member's approval;
* moving a timeline item shifts its dependents by the same delta (``timeline.cascaded``),
  dependency cycles are refused, overlaps with the same vendor or location are reported;
* guest changes on the wedding day raise ``guests.changed_on_wedding_day``.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgspec

from streams.changes import ChangeRequest
from streams.permissions import Channel, Role, WeddingStatus
from streams.state import CHANNEL_OF, EntityKind, Op

APPROVAL_NAMESPACE = uuid.UUID("9d7c1f5e-3b1a-4f0e-8d9a-2b6c7e5f1a30")


class Policy(Enum):
    LAST_WRITER_WINS = "last_writer_wins"
    REJECT = "reject"


def policy(kind: EntityKind, name: str, status: WeddingStatus) -> Policy:
    """The one table of field policies."""
    if kind is EntityKind.TIMELINE and name in ("start", "end") and (
        status is WeddingStatus.WEDDING_DAY
    ):
        return Policy.REJECT  # on the day, nobody silently overwrites a time someone moved
    return Policy.LAST_WRITER_WINS


@dataclass(frozen=True, slots=True)
class Rules:
    approval_threshold: int  # minor units; a larger move of a budget amount needs approval
    approval_ttl: float  # seconds before an undecided approval expires


@dataclass(slots=True)
class Entity:
    kind: EntityKind
    entity_id: str
    version: int
    deleted: bool
    fields: dict[str, Any]
    field_versions: dict[str, int]
    field_authors: dict[str, str]
    created_by: str
    updated_by: str


@dataclass(slots=True)
class Emit:
    type: str
    channel: Channel
    data: dict[str, Any]


@dataclass(slots=True)
class Audit:
    entity: Entity
    op: str
    before: dict[str, Any]
    after: dict[str, Any]


@dataclass(slots=True)
class PendingApproval:
    id: str
    change: ChangeRequest
    expires_at: float


@dataclass(slots=True)
class Outcome:
    events: list[Emit] = field(default_factory=list)
    writes: dict[tuple[EntityKind, str], Entity] = field(default_factory=dict)
    audits: list[Audit] = field(default_factory=list)
    approval: PendingApproval | None = None


class View:
    """The entities a change may touch (for a timeline change: the whole timeline)."""

    def __init__(self, entities: list[Entity]) -> None:
        self.entities = {(e.kind, e.entity_id): e for e in entities}

    def get(self, kind: EntityKind, entity_id: str) -> Entity | None:
        return self.entities.get((kind, entity_id))

    def live(self, kind: EntityKind) -> list[Entity]:
        return [e for (k, _), e in self.entities.items() if k is kind and not e.deleted]


def _entity_event(type_: str, e: Entity, change: ChangeRequest, seq: int, cause: str,
                  changed: list[str]) -> Emit:  # fmt: skip
    data: dict[str, Any] = {
        "entity": e.kind.value, "entity_id": e.entity_id, "version": e.version,
        "fields": {} if e.deleted else e.fields, "changed": changed,
        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id}, "cause": cause,
    }  # fmt: skip
    return Emit(type_, CHANNEL_OF[e.kind], data)


def _reject(change: ChangeRequest, seq: int, reason: str, message: str,
            current: Entity | None, fields: list[str] | None = None) -> Outcome:  # fmt: skip
    data: dict[str, Any] = {
        "entity": change.entity.value, "entity_id": change.entity_id, "reason": reason,
        "message": message, "change": {"id": change.client_id, "seq": seq,
                                       "by": change.actor.user_id},
        "fields": fields or sorted(change.fields),
        "current": None if current is None or current.deleted
        else {"version": current.version, "fields": current.fields},
    }  # fmt: skip
    return Outcome(events=[Emit("conflict.rejected", CHANNEL_OF[change.entity], data)])


def invalid(change: ChangeRequest, seq: int, message: str) -> Outcome:
    """The change refused with reason ``invalid``: it cannot be applied or stored at all."""
    return _reject(change, seq, "invalid", message, None)


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _iso(value: dt.datetime) -> str:
    out: str = msgspec.to_builtins(value)
    return out


def apply_change(
    change: ChangeRequest, seq: int, view: View, status: WeddingStatus, rules: Rules,
    *, approved: bool = False,
) -> Outcome:  # fmt: skip
    """The outcome of the change stored at ``seq`` of the changes stream."""
    cur = view.get(change.entity, change.entity_id)
    if change.op is Op.CREATE:
        if cur is not None:
            why = "deleted" if cur.deleted else "exists"
            return _reject(change, seq, why, f"{change.entity_id} {why} already", cur)
    elif cur is None:
        return _reject(change, seq, "not_found", f"no {change.entity.value} {change.entity_id}",
                       None)  # fmt: skip
    elif cur.deleted:
        return _reject(change, seq, "deleted", "it was deleted", cur)
    if change.op is Op.DELETE:
        assert cur is not None
        out = Outcome()
        gone = copy.deepcopy(cur)
        gone.version, gone.deleted, gone.updated_by = cur.version + 1, True, change.actor.user_id
        out.writes[(gone.kind, gone.entity_id)] = gone
        out.events.append(_entity_event("entity.deleted", gone, change, seq, "change", []))
        out.audits.append(Audit(gone, "delete", dict(cur.fields), {}))
        _wedding_day_guests(change, status, out, [])
        return out
    return _upsert(change, seq, cur, view, status, rules, approved)


def _upsert(
    change: ChangeRequest, seq: int, cur: Entity | None, view: View, status: WeddingStatus,
    rules: Rules, approved: bool,
) -> Outcome:  # fmt: skip
    user = change.actor.user_id
    stale: list[str] = []
    if cur is not None:
        base = change.base_version
        if base is None or base > cur.version:
            return _reject(change, seq, "invalid",
                           f"base_version must be at most {cur.version}", cur)  # fmt: skip
        stale = [f for f, v in change.fields.items()
                 if cur.field_versions.get(f, 0) > base and cur.fields.get(f) != v]  # fmt: skip
        refused = [f for f in stale if policy(change.entity, f, status) is Policy.REJECT]
        if refused:
            return _reject(change, seq, "stale", f"{', '.join(refused)} changed meanwhile; "
                           "rebase on the current version", cur, refused)  # fmt: skip
    before = {} if cur is None else dict(cur.fields)
    fields = {**before, **change.fields}
    if change.entity is EntityKind.TIMELINE:
        from workers.conflicts.timeline import moved

        moved(change, before, fields)
    if change.entity is EntityKind.TIMELINE and _time(fields["end"]) < _time(fields["start"]):
        return _reject(change, seq, "invalid", "end is before start", cur)
    if not approved and (held := _needs_approval(change, before, rules)):
        return held_for_approval(change, seq, rules, held)
    changed = [f for f in fields if f not in before or before[f] != fields[f]]
    version = 1 if cur is None else cur.version + 1
    new = Entity(
        change.entity, change.entity_id, version, False, fields,
        {} if cur is None else dict(cur.field_versions),
        {} if cur is None else dict(cur.field_authors),
        user if cur is None else cur.created_by, user,
    )  # fmt: skip
    for f in changed:
        new.field_versions[f], new.field_authors[f] = version, user
    out = Outcome()
    out.writes[(new.kind, new.entity_id)] = new
    kind = "entity.created" if cur is None else "entity.updated"
    out.events.append(_entity_event(kind, new, change, seq, "change", changed))
    out.audits.append(Audit(new, change.op.value, {f: before.get(f) for f in changed},
                            {f: fields[f] for f in changed}))  # fmt: skip
    for f in stale:  # last writer wins: tell the overwritten author
        assert cur is not None
        out.events.append(Emit("conflict.resolved", CHANNEL_OF[change.entity], {
            "entity": change.entity.value, "entity_id": change.entity_id, "field": f,
            "version": version, "winner": {"user_id": user, "value": fields[f]},
            "overwritten": {"user_id": cur.field_authors.get(f), "value": before.get(f)},
            "change": {"id": change.client_id, "seq": seq, "by": user},
        }))  # fmt: skip
    if change.entity is EntityKind.TIMELINE:
        from workers.conflicts.timeline import after_timeline_change

        rejected = after_timeline_change(change, seq, cur, new, view, out)
        if rejected is not None:
            return rejected
    _wedding_day_guests(change, status, out, changed)
    return out


def _needs_approval(change: ChangeRequest, before: dict[str, Any], rules: Rules) -> list[str]:
    if change.entity is not EntityKind.BUDGET or change.actor.role is Role.COUPLE:
        return []
    limit = rules.approval_threshold
    return [f for f in ("estimated", "actual") if f in change.fields
            and abs((change.fields[f] or 0) - (before.get(f) or 0)) > limit]  # fmt: skip


def held_for_approval(change: ChangeRequest, seq: int, rules: Rules, amounts: list[str]) -> Outcome:
    approval_id = str(uuid.uuid5(APPROVAL_NAMESPACE, f"{change.wedding_id}:{seq}"))
    expires = change.ts + rules.approval_ttl
    data = {
        "approval_id": approval_id, "entity": change.entity.value,
        "entity_id": change.entity_id, "op": change.op.value, "fields": change.fields,
        "amounts": amounts, "requested_by": change.actor.user_id, "expires_at": expires,
        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id},
    }  # fmt: skip
    return Outcome(events=[Emit("approval.requested", Channel.BUDGET, data)],
                   approval=PendingApproval(approval_id, change, expires))  # fmt: skip


def _wedding_day_guests(change: ChangeRequest, status: WeddingStatus, out: Outcome,
                        changed: list[str]) -> None:  # fmt: skip
    if change.entity is EntityKind.GUESTS and status is WeddingStatus.WEDDING_DAY:
        out.events.append(Emit("guests.changed_on_wedding_day", Channel.GUESTS, {
            "entity_id": change.entity_id, "op": change.op.value, "changed": changed,
            "by": change.actor.user_id,
        }))  # fmt: skip
