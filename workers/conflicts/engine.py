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
* a budget amount moved by more than the threshold from its last approved value (the
  couple's own or granted), a delete of a large line and ``paid``/``approved`` of one, by
  anyone but the couple, wait for a couple member's approval;
* a vendor changes only their own records (streams/scope.py): ``forbidden`` otherwise;
* moving a timeline item shifts its dependents by the same delta (``timeline.cascaded``),
  dependency cycles are refused, overlaps with the same vendor or location are reported;
* guest changes on the wedding day raise ``guests.changed_on_wedding_day``.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streams.changes import ChangeRequest
from streams.permissions import Channel, Role, WeddingStatus
from streams.scope import SCOPE_FIELD, holder, is_scoped, scope_data
from streams.state import CHANNEL_OF, EntityKind, Op
from workers.conflicts.outcome import (
    Audit,
    Emit,
    Entity,
    Outcome,
    PendingApproval,
    View,
    entity_event,
    parse_time,
    reject,
)
from workers.conflicts.timeline import after_timeline_change, moved

APPROVAL_NAMESPACE = uuid.UUID("9d7c1f5e-3b1a-4f0e-8d9a-2b6c7e5f1a30")
# a budget line's amounts, each with the field keeping its last approved value
APPROVED_AMOUNT = {"estimated": "approved_estimated", "actual": "approved_actual"}
FLAGS = ("paid", "approved")  # need approval on a large line


class Policy(Enum):
    LAST_WRITER_WINS = "last_writer_wins"
    REJECT = "reject"


def policy(kind: EntityKind, name: str, status: WeddingStatus) -> Policy:
    """The one table of field policies."""
    if (
        kind is EntityKind.TIMELINE
        and name in ("start", "end")
        and (status is WeddingStatus.WEDDING_DAY)
    ):
        return Policy.REJECT  # on the day, nobody silently overwrites a time someone moved
    return Policy.LAST_WRITER_WINS


@dataclass(frozen=True, slots=True)
class Rules:
    approval_threshold: int  # minor units; a larger move of a budget amount needs approval
    approval_ttl: float  # seconds before an undecided approval expires


def apply_change(
    change: ChangeRequest,
    seq: int,
    view: View,
    status: WeddingStatus,
    rules: Rules,
    *,
    approved: bool = False,
) -> Outcome:
    """The outcome of the change stored at ``seq`` of the changes stream."""
    cur = view.get(change.entity, change.entity_id)
    if is_scoped(change.actor.role, change.entity) and (why := _out_of_scope(change, cur)):
        # no ``current``: the record is not theirs to see
        return reject(change, seq, "forbidden", why, None)
    if change.op is Op.CREATE:
        if cur is not None:
            why = "deleted" if cur.deleted else "exists"
            return reject(change, seq, why, f"{change.entity_id} {why} already", cur)
    elif cur is None:
        return reject(
            change, seq, "not_found", f"no {change.entity.value} {change.entity_id}", None
        )
    elif cur.deleted:
        return reject(change, seq, "deleted", "it was deleted", cur)
    if change.op is Op.DELETE:
        assert cur is not None
        if not approved and (held := _needs_approval(change, cur.fields, None, rules)):
            return held_for_approval(change, seq, rules, held)
        out = Outcome()
        gone = copy.deepcopy(cur)
        gone.version, gone.deleted, gone.updated_by = cur.version + 1, True, change.actor.user_id
        out.writes[(gone.kind, gone.entity_id)] = gone
        deleted = entity_event("entity.deleted", gone, change, seq, "change", [], cur.fields)
        out.events.append(deleted)
        out.audits.append(Audit(gone, "delete", dict(cur.fields), {}))
        _wedding_day_guests(change, status, out, [])
        return out
    return _upsert(change, seq, cur, view, status, rules, approved)


def _upsert(
    change: ChangeRequest,
    seq: int,
    cur: Entity | None,
    view: View,
    status: WeddingStatus,
    rules: Rules,
    approved: bool,
) -> Outcome:
    user = change.actor.user_id
    stale: list[str] = []
    if cur is not None:
        base = change.base_version
        if base is None or base > cur.version:
            return reject(
                change, seq, "invalid", f"base_version must be at most {cur.version}", cur
            )
        stale = [
            f
            for f, v in change.fields.items()
            if cur.field_versions.get(f, 0) > base and cur.fields.get(f) != v
        ]
        refused = [f for f in stale if policy(change.entity, f, status) is Policy.REJECT]
        if refused:
            return reject(
                change,
                seq,
                "stale",
                f"{', '.join(refused)} changed meanwhile; rebase on the current version",
                cur,
                refused,
            )
    before = {} if cur is None else dict(cur.fields)
    fields = {**before, **change.fields}
    if change.entity is EntityKind.TIMELINE:
        moved(change, before, fields)
    timeline = change.entity is EntityKind.TIMELINE
    if timeline and parse_time(fields["end"]) < parse_time(fields["start"]):
        return reject(change, seq, "invalid", "end is before start", cur)
    if not approved and (held := _needs_approval(change, before, fields, rules)):
        return held_for_approval(change, seq, rules, held)
    if change.entity is EntityKind.BUDGET:
        _keep_approved(change, before, fields, approved)
    changed = [f for f in fields if f not in before or before[f] != fields[f]]
    version = 1 if cur is None else cur.version + 1
    new = Entity(
        change.entity,
        change.entity_id,
        version,
        False,
        fields,
        {} if cur is None else dict(cur.field_versions),
        {} if cur is None else dict(cur.field_authors),
        user if cur is None else cur.created_by,
        user,
    )
    for f in changed:
        new.field_versions[f], new.field_authors[f] = version, user
    out = Outcome()
    out.writes[(new.kind, new.entity_id)] = new
    kind = "entity.created" if cur is None else "entity.updated"
    out.events.append(entity_event(kind, new, change, seq, "change", changed, before))
    out.audits.append(
        Audit(
            new,
            change.op.value,
            {f: before.get(f) for f in changed},
            {f: fields[f] for f in changed},
        )
    )
    scope = scope_data(change.entity, before, fields)
    for f in stale:  # last writer wins: tell the overwritten author
        assert cur is not None
        resolved = {
            "entity": change.entity.value,
            "entity_id": change.entity_id,
            "field": f,
            "version": version,
            "winner": {"user_id": user, "value": fields[f]},
            "overwritten": {"user_id": cur.field_authors.get(f), "value": before.get(f)},
            "change": {"id": change.client_id, "seq": seq, "by": user},
        }
        if scope is not None:
            resolved["scope"] = scope
        out.events.append(Emit("conflict.resolved", CHANNEL_OF[change.entity], resolved))
    if change.entity is EntityKind.TIMELINE:
        rejected = after_timeline_change(change, seq, cur, new, view, out)
        if rejected is not None:
            return rejected
    _wedding_day_guests(change, status, out, changed)
    return out


def _out_of_scope(change: ChangeRequest, cur: Entity | None) -> str | None:
    """Why a change by a member with record-level scope is not theirs to make, if so: the
    record must be theirs (deleted ones too) and stay theirs."""
    me, kind = change.actor.user_id, change.entity
    if cur is not None and holder(kind, cur.fields) != me:
        return f"{kind.value} {change.entity_id} is not yours"
    after = {**(cur.fields if cur is not None else {}), **change.fields}
    if change.op is not Op.DELETE and holder(kind, after) != me:
        return f"{SCOPE_FIELD[kind]} must stay {me}"
    return None


def _amount(fields: dict[str, Any] | None, name: str) -> int:
    value = None if fields is None else fields.get(name)
    return value if isinstance(value, int) else 0  # unset, null: nothing


def _needs_approval(
    change: ChangeRequest, before: dict[str, Any], after: dict[str, Any] | None, rules: Rules
) -> list[str]:
    """The fields whose effect needs a couple member's approval (``after`` None: a delete).

    Measured on the effect, not the step: an amount the change sets (every amount, for a
    delete, which takes them to 0) further than the threshold from its last approved value
    (none: 0); a delete of a line with an amount over the threshold; ``paid``/``approved``
    changed on a line with an amount over the threshold, before or after."""
    if change.entity is not EntityKind.BUDGET or change.actor.role is Role.COUPLE:
        return []
    limit = rules.approval_threshold
    moved = [
        f
        for f, approved in APPROVED_AMOUNT.items()
        if (after is None or f in change.fields)
        and abs(_amount(after, f) - _amount(before, approved)) > limit
    ]
    large = [f for f in APPROVED_AMOUNT if max(_amount(before, f), _amount(after, f)) > limit]
    if after is None:
        return moved + [f for f in large if f not in moved]
    flags = [f for f in FLAGS if f in change.fields and change.fields[f] != bool(before.get(f))]
    return moved + (flags if large else [])


def _keep_approved(
    change: ChangeRequest, before: dict[str, Any], fields: dict[str, Any], granted: bool
) -> None:
    """A budget line's approved amounts: set by the couple's own changes and by the changes
    they grant (for the amounts the change sets, or all when it sets ``approved: true``),
    kept otherwise; never what a client sent."""
    by_couple = granted or change.actor.role is Role.COUPLE
    everything = change.fields.get("approved") is True
    for f, approved in APPROVED_AMOUNT.items():
        if by_couple and (everything or f in change.fields):
            fields[approved] = fields.get(f)
        else:
            fields[approved] = before.get(approved)


def held_for_approval(change: ChangeRequest, seq: int, rules: Rules, amounts: list[str]) -> Outcome:
    approval_id = str(uuid.uuid5(APPROVAL_NAMESPACE, f"{change.wedding_id}:{seq}"))
    expires = change.ts + rules.approval_ttl
    data = {
        "approval_id": approval_id,
        "entity": change.entity.value,
        "entity_id": change.entity_id,
        "op": change.op.value,
        "fields": change.fields,
        "amounts": amounts,
        "requested_by": change.actor.user_id,
        "expires_at": expires,
        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id},
    }
    return Outcome(
        events=[Emit("approval.requested", Channel.BUDGET, data)],
        approval=PendingApproval(approval_id, change, expires),
    )


def _wedding_day_guests(
    change: ChangeRequest, status: WeddingStatus, out: Outcome, changed: list[str]
) -> None:
    if change.entity is EntityKind.GUESTS and status is WeddingStatus.WEDDING_DAY:
        out.events.append(
            Emit(
                "guests.changed_on_wedding_day",
                Channel.GUESTS,
                {
                    "entity_id": change.entity_id,
                    "op": change.op.value,
                    "changed": changed,
                    "by": change.actor.user_id,
                },
            )
        )
