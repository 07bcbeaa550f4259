"""Record-level scope: within a channel it reads, which records a member sees and changes.

The permission matrix (streams/permissions.py) decides channels. Inside two of them a vendor
holds only their own records: the tasks assigned to them (``assignee`` is their user id)
and their own vendor record (``member`` is their user id). A vendor record and a vendor's
tasks are linked through the vendor's user id, never through the vendor record's id.

Every layer applies the same rule from here: the gateway at the edge (what a change frame
can say: :meth:`RecordScope.check_change`) and in fan-out and resume
(:meth:`RecordScope.frame`), the HTTP history (:meth:`RecordScope.view`) and ``/state``
(:data:`SCOPE_FIELD`), and the conflicts worker, the only one that knows a record's
current holder (:func:`holder`; it refuses with ``conflict.rejected`` reason ``forbidden``).

The worker records on each event of a scoped kind whose view held the record before and
after it (``data.scope``), so filtering an event needs nothing but the event. A record
that leaves a vendor's view (reassigned to someone else) reaches them as
``entity.deleted`` with ``cause: "reassigned"`` (:func:`removal`): folding it removes the
record, and a later reassignment back arrives whole, as every entity event carries all
fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.permissions import Role
from streams.protocol import event_frame
from streams.state import CHANNEL_OF, ENTITY_EVENTS, EntityKind, Op

#: The field naming whose record it is, per kind with record-level scope.
SCOPE_FIELD: dict[EntityKind, str] = {EntityKind.TASKS: "assignee", EntityKind.VENDORS: "member"}
#: Roles that see only their own records of those kinds (others see every record).
SCOPED_ROLES = frozenset({Role.VENDOR})
#: Events about one record, filtered by scope; any other event (a ``message`` on the
#: channel, say) goes to every reader of the channel.
RECORD_EVENTS = frozenset({*ENTITY_EVENTS, "conflict.resolved", "conflict.rejected"})
REASSIGNED = "reassigned"  # the ``cause`` of the removal a record's former holder receives

_KINDS = {CHANNEL_OF[k].value: k for k in SCOPE_FIELD}
_encode = msgspec.json.Encoder()


def holder(kind: EntityKind, fields: Mapping[str, Any] | None) -> str | None:
    """The user whose scoped view holds a record with these fields (None: nobody's)."""
    name = SCOPE_FIELD.get(kind)
    value = None if name is None or fields is None else fields.get(name)
    return value if isinstance(value, str) else None


def scope_data(
    kind: EntityKind, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, str | None] | None:
    """``data.scope`` of an event about a record: its holder before and after the event."""
    if kind not in SCOPE_FIELD:
        return None
    return {"before": holder(kind, before), "after": holder(kind, after)}


def is_scoped(role: Role, kind: EntityKind) -> bool:
    return role in SCOPED_ROLES and kind in SCOPE_FIELD


def removal(event: dict[str, Any]) -> dict[str, Any]:
    """What a record's former holder receives instead of the event that moved it away."""
    d = event["data"]
    data = {
        "entity": d["entity"],
        "entity_id": d["entity_id"],
        "version": d["version"],
        "fields": {},
        "changed": [],
        "cause": REASSIGNED,
        "change": d.get("change"),
    }
    return {**event, "type": "entity.deleted", "data": data}


@dataclass(frozen=True, slots=True)
class RecordScope:
    """One member's record-level scope (None from :meth:`of`: they see every record)."""

    user_id: str
    channels: frozenset[str]  # the channels whose record events are filtered

    @classmethod
    def of(cls, role: Role, user_id: str) -> RecordScope | None:
        if role not in SCOPED_ROLES:
            return None
        return cls(user_id, frozenset(_KINDS))

    def check_change(
        self, kind: EntityKind, op: Op, given: Mapping[str, Any], fields: dict[str, Any]
    ) -> str | None:
        """At the edge, what a change frame alone decides: the record must stay the
        member's. A create that does not name a holder is theirs (``fields`` is completed);
        naming anyone else is refused (the message). Whether the record is theirs *now* is
        the worker's to decide."""
        name = SCOPE_FIELD.get(kind)
        if name is None:
            return None
        if op is Op.CREATE and name not in given:
            fields[name] = self.user_id
            return None
        if op is not Op.DELETE and name in fields and fields[name] != self.user_id:
            return f"a vendor's {kind.value} stay theirs: {name} must be {self.user_id}"
        return None

    def view(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event as this member sees it (a decoded stored event of one of
        :attr:`channels`): itself, a :func:`removal`, or None (not theirs)."""
        kind_of = _KINDS.get(str(event.get("channel")))
        if event.get("type") not in RECORD_EVENTS or kind_of is None:
            return event
        d = event.get("data")
        if not isinstance(d, dict):
            return None
        me, scope = self.user_id, d.get("scope")
        if isinstance(scope, dict):
            before, after = scope.get("before"), scope.get("after")
        else:  # stored before events recorded their scope: what the fields tell
            fields = d.get("fields")
            before = None
            after = holder(kind_of, fields) if isinstance(fields, dict) else None
        if event["type"] in ENTITY_EVENTS:
            if after == me or (before == me and event["type"] == "entity.deleted"):
                return event
            return removal(event) if before == me else None
        change = d.get("change")
        by = change.get("by") if isinstance(change, dict) else None
        return event if me in (after, by) else None  # a conflict about theirs, or their own

    def frame(self, seq: int, stored: bytes, frame: str) -> str | None:
        """The ``event`` frame for this member of the stored event at ``seq`` (``frame``:
        the one every unscoped reader gets), or None."""
        event = msgspec.json.decode(stored)
        seen = self.view(event) if isinstance(event, dict) else None
        if seen is None:
            return None
        return frame if seen is event else event_frame(seq, _encode.encode(seen))
