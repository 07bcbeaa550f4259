"""Presence: what is stored per connection, what clients see, and who may see whom.

One record per session (a device: a user on phone and laptop has two) lives in the NATS KV
bucket ``WEDSYNC_PRESENCE`` under ``<wedding_id>.<session_id>``; gateway processes keep a
heartbeat under ``gw.<gateway_id>``. Joins and leaves are also durable events on the
``WEDSYNC_PRESENCE_LOG`` stream.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from streams.permissions import Role, can_read
from streams.state import CHANNEL_OF, EntityKind

BUCKET = "WEDSYNC_PRESENCE"
GATEWAY_PREFIX = "gw"


class Status(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    AWAY = "away"
    BUSY = "busy"


class Editing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    entity: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    entity_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Record(msgspec.Struct, frozen=True):
    """The KV value: public fields plus what the gateways and the expiry worker need."""

    wedding_id: str
    user_id: str
    display_name: str | None
    role: Role
    connection_id: str
    status: Status
    location: str | None
    editing: Editing | None
    connected_at: float
    last_active_at: float
    auto: bool  # status computed by the server (idle/away); False once the user chose one
    gateway: str  # the gateway process that owns the socket
    owner: str  # the socket, so a late cleanup never removes a newer socket's record
    disconnected_at: float | None = None  # socket gone; a leave follows after the grace

    def public(self) -> ConnectionPresence:
        return ConnectionPresence(
            connection_id=self.connection_id,
            status=self.status,
            location=self.location,
            editing=self.editing,
            connected_at=self.connected_at,
            last_active_at=self.last_active_at,
        )


class ConnectionPresence(msgspec.Struct, frozen=True):
    connection_id: str
    status: Status
    location: str | None
    editing: Editing | None
    connected_at: float
    last_active_at: float


class UserPresence(msgspec.Struct):
    """A user with the connections (devices) shown: a snapshot or diff entry."""

    user_id: str
    display_name: str | None
    role: Role
    connections: list[ConnectionPresence]


def group_by_user(records: list[Record], viewer: Role) -> list[UserPresence]:
    """``records`` as ``viewer`` may see them, grouped by user: only the roles it may see
    (:data:`VISIBLE`), and ``editing`` only on channels it may read (:func:`sees_editing`)."""
    users: dict[str, UserPresence] = {}
    for r in sorted(records, key=lambda r: (r.user_id, r.connected_at, r.connection_id)):
        if not can_see(viewer, r.role):
            continue
        u = users.get(r.user_id)
        if u is None:
            u = users[r.user_id] = UserPresence(r.user_id, r.display_name, r.role, [])
        shown = r.public()
        if shown.editing is not None and not sees_editing(viewer, shown.editing):
            shown = msgspec.structs.replace(shown, editing=None)
        u.connections.append(shown)
    return list(users.values())


# -- who may see whom ------------------------------------------------------------------

_EVERYONE = frozenset(Role)
#: Viewer role → the roles whose presence it is shown. Guests and vendors do not see each
#: other (a guest has no business knowing which caterer is online, nor a vendor which
#: guest); everybody sees the couple and the planner.
VISIBLE: dict[Role, frozenset[Role]] = {
    Role.COUPLE: _EVERYONE,
    Role.PLANNER: _EVERYONE,
    Role.FAMILY: _EVERYONE,
    Role.VENDOR: frozenset({Role.COUPLE, Role.PLANNER, Role.FAMILY, Role.VENDOR}),
    Role.GUEST: frozenset({Role.COUPLE, Role.PLANNER, Role.FAMILY, Role.GUEST}),
}


def can_see(viewer: Role, subject: Role) -> bool:
    return subject in VISIBLE[viewer]


def sees_editing(viewer: Role, editing: Editing) -> bool:
    """Whether ``viewer`` may know that someone edits this field: only on a channel it may
    read (a guest learns nothing about budget lines, not even that one is being edited).
    An entity that is no known kind (recorded before kinds were checked) is shown to none."""
    try:
        kind = EntityKind(editing.entity)
    except ValueError:
        return False
    return can_read(viewer, CHANNEL_OF[kind])


# -- durable join/leave events (WEDSYNC_PRESENCE_LOG) -----------------------------------


class PresenceLogEvent(msgspec.Struct, frozen=True):
    """``presence.joined`` / ``presence.left`` on ``wedsync.presence.<wedding>.<kind>``."""

    type: str
    wedding_id: str
    user_id: str
    role: Role
    connection_id: str
    at: float
    last_seen: float
