"""The shared state of a wedding: entity kinds, their fields, and how clients fold events.

Every entity is ``{"version": V, "fields": {...}}`` under ``entities[kind][entity_id]``.
Clients send ``change`` frames; the conflicts worker applies them in order and publishes
``entity.created|updated|deleted`` events that carry the *resulting* fields and version,
so folding an event is a replacement, never a merge (:func:`fold`).

Amounts of money are integers in minor units (cents); times are ISO 8601 with an offset.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from streams.permissions import Channel


class EntityKind(StrEnum):
    TIMELINE = "timeline"
    BUDGET = "budget"
    VENDORS = "vendors"
    GUESTS = "guests"
    TASKS = "tasks"


#: Permissions and delivery of an entity kind follow the channel of the same name.
CHANNEL_OF: dict[EntityKind, Channel] = {k: Channel(k.value) for k in EntityKind}


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_:.-]+$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Notes = Annotated[str, msgspec.Meta(max_length=5000)]
Money = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Count = Annotated[int, msgspec.Meta(ge=0, le=100)]
Instant = Annotated[dt.datetime, msgspec.Meta(tz=True)]
_U = msgspec.UNSET


class _Fields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Every field optional: a create sends all it has, an update only what changes."""


class TimelineFields(_Fields):
    title: Text | msgspec.UnsetType = _U
    start: Instant | msgspec.UnsetType = _U
    end: Instant | msgspec.UnsetType = _U
    location: Text | msgspec.UnsetType | None = _U
    vendor_id: Ref | msgspec.UnsetType | None = _U
    depends_on: Annotated[list[Ref], msgspec.Meta(max_length=50)] | msgspec.UnsetType = _U
    notes: Notes | msgspec.UnsetType | None = _U


class BudgetFields(_Fields):
    category: Text | msgspec.UnsetType = _U
    description: Text | msgspec.UnsetType | None = _U
    estimated: Money | msgspec.UnsetType = _U
    actual: Money | msgspec.UnsetType | None = _U
    paid: bool | msgspec.UnsetType = _U
    approved: bool | msgspec.UnsetType = _U
    # kept by the conflicts worker (SERVER_FIELDS): the amounts as last set or granted by
    # the couple, which non-couple moves are measured from (docs/conflicts.md, approvals)
    approved_estimated: Money | msgspec.UnsetType | None = _U
    approved_actual: Money | msgspec.UnsetType | None = _U


class VendorStatus(StrEnum):
    ENQUIRED = "enquired"
    BOOKED = "booked"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class VendorFields(_Fields):
    name: Text | msgspec.UnsetType = _U
    category: Text | msgspec.UnsetType = _U
    contact: Text | msgspec.UnsetType | None = _U
    status: VendorStatus | msgspec.UnsetType = _U
    # the vendor's own member account: hears about timeline items with this vendor_id
    member: Ref | msgspec.UnsetType | None = _U


class Rsvp(StrEnum):
    PENDING = "pending"
    YES = "yes"
    NO = "no"


class GuestFields(_Fields):
    name: Text | msgspec.UnsetType = _U
    rsvp: Rsvp | msgspec.UnsetType = _U
    meal: Text | msgspec.UnsetType | None = _U
    table: Text | msgspec.UnsetType | None = _U
    plus_ones: Count | msgspec.UnsetType = _U
    dietary: Text | msgspec.UnsetType | None = _U
    contact: Text | msgspec.UnsetType | None = _U


class TaskFields(_Fields):
    title: Text | msgspec.UnsetType = _U
    assignee: Ref | msgspec.UnsetType | None = _U
    due: dt.date | msgspec.UnsetType | None = _U
    done: bool | msgspec.UnsetType = _U


FIELDS: dict[EntityKind, type[_Fields]] = {
    EntityKind.TIMELINE: TimelineFields,
    EntityKind.BUDGET: BudgetFields,
    EntityKind.VENDORS: VendorFields,
    EntityKind.GUESTS: GuestFields,
    EntityKind.TASKS: TaskFields,
}

#: What a create must carry, and defaults a create fills in.
REQUIRED: dict[EntityKind, tuple[str, ...]] = {
    EntityKind.TIMELINE: ("title", "start", "end"),
    EntityKind.BUDGET: ("category", "estimated"),
    EntityKind.VENDORS: ("name", "category"),
    EntityKind.GUESTS: ("name",),
    EntityKind.TASKS: ("title",),
}
DEFAULTS: dict[EntityKind, dict[str, Any]] = {
    EntityKind.TIMELINE: {"location": None, "vendor_id": None, "depends_on": [], "notes": None},
    EntityKind.BUDGET: {"description": None, "actual": None, "paid": False, "approved": False},
    EntityKind.VENDORS: {"contact": None, "status": "enquired"},
    EntityKind.GUESTS: {
        "rsvp": "pending",
        "meal": None,
        "table": None,
        "plus_ones": 0,
        "dietary": None,
        "contact": None,
    },
    EntityKind.TASKS: {"assignee": None, "due": None, "done": False},
}


#: Fields the server keeps: in stored fields and events, refused in a client's change.
SERVER_FIELDS: dict[EntityKind, tuple[str, ...]] = {
    EntityKind.BUDGET: ("approved_estimated", "approved_actual"),
}


class FieldError(ValueError):
    """The fields of a change do not match the entity kind's schema."""


def validate_fields(kind: EntityKind, op: Op, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields as stored (JSON values, ISO strings), or :class:`FieldError`."""
    kept = [f for f in SERVER_FIELDS.get(kind, ()) if f in fields]
    if kept:
        raise FieldError(f"{', '.join(kept)} is kept by the server")
    try:
        parsed = msgspec.convert(fields, FIELDS[kind], strict=False)
    except msgspec.ValidationError as exc:
        raise FieldError(str(exc)) from None
    out: dict[str, Any] = msgspec.to_builtins(parsed)
    out.update({k: None for k, v in fields.items() if v is None})  # explicit clears
    if op is Op.CREATE:
        missing = [f for f in REQUIRED[kind] if out.get(f) is None]
        if missing:
            raise FieldError(f"a new {kind.value} item needs {', '.join(missing)}")
        out = {**DEFAULTS[kind], **out}
    elif op is Op.UPDATE:
        if not out:
            raise FieldError("an update must change at least one field")
        nulls = [f for f in REQUIRED[kind] if f in out and out[f] is None]
        if nulls:
            raise FieldError(f"{', '.join(nulls)} cannot be cleared")
    start, end = out.get("start"), out.get("end")
    if start and end and dt.datetime.fromisoformat(end) < dt.datetime.fromisoformat(start):
        raise FieldError("end is before start")
    return out


# -- the state a client holds, and folding events into it ---------------------------------

ENTITY_EVENTS = ("entity.created", "entity.updated", "entity.deleted")

State = dict[str, dict[str, dict[str, Any]]]  # kind → entity_id → {"version", "fields"}


def fold(state: State, tombstones: dict[tuple[str, str], int], event: dict[str, Any]) -> None:
    """Apply one stored event (the ``event`` of an event frame) to a client's state.

    Events carry resulting fields and a per-entity version that only grows, so an event
    at or below the version already held (a duplicate, or one already in a loaded
    snapshot) is skipped; ``tombstones`` remembers deleted entities' last versions.
    """
    if event.get("type") not in ENTITY_EVENTS:
        return
    d = event["data"]
    kind, eid, version = d["entity"], d["entity_id"], d["version"]
    items = state.setdefault(kind, {})
    held = items.get(eid, {}).get("version", tombstones.get((kind, eid), 0))
    if version <= held:
        return
    if event["type"] == "entity.deleted":
        items.pop(eid, None)
        tombstones[(kind, eid)] = version
    else:
        items[eid] = {"version": version, "fields": d["fields"]}
