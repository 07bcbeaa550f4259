"""What applying a change works on and produces: the entities it may touch (:class:`View`)
and its :class:`Outcome` (events to publish, rows to write, audit entries, a pending approval),
with the helpers that build the events. Shared by the rules of :mod:`.engine` and the timeline
rules of :mod:`.timeline`, which both import this module and not each other's internals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams.changes import ChangeRequest
from streams.permissions import Channel
from streams.scope import scope_data
from streams.state import CHANNEL_OF, EntityKind


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


def entity_event(
    type_: str,
    e: Entity,
    change: ChangeRequest,
    seq: int,
    cause: str,
    changed: list[str],
    was: dict[str, Any] | None = None,
) -> Emit:
    """``was``: the fields before (for the record-level scope of kinds that have one)."""
    data: dict[str, Any] = {
        "entity": e.kind.value,
        "entity_id": e.entity_id,
        "version": e.version,
        "fields": {} if e.deleted else e.fields,
        "changed": changed,
        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id},
        "cause": cause,
    }
    scope = scope_data(e.kind, was, None if e.deleted else e.fields)
    if scope is not None:
        data["scope"] = scope
    return Emit(type_, CHANNEL_OF[e.kind], data)


def reject(
    change: ChangeRequest,
    seq: int,
    reason: str,
    message: str,
    current: Entity | None,
    fields: list[str] | None = None,
) -> Outcome:
    data: dict[str, Any] = {
        "entity": change.entity.value,
        "entity_id": change.entity_id,
        "reason": reason,
        "message": message,
        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id},
        "fields": fields or sorted(change.fields),
        "current": None
        if current is None or current.deleted
        else {"version": current.version, "fields": current.fields},
    }
    now = None if current is None else current.fields
    scope = scope_data(change.entity, now, now)
    if scope is not None:
        data["scope"] = scope
    return Outcome(events=[Emit("conflict.rejected", CHANNEL_OF[change.entity], data)])


def invalid(change: ChangeRequest, seq: int, message: str) -> Outcome:
    """The change refused with reason ``invalid``: it cannot be applied or stored at all."""
    return reject(change, seq, "invalid", message, None)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def iso(value: dt.datetime) -> str:
    out: str = msgspec.to_builtins(value)
    return out
