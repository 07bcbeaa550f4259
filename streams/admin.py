"""Request and response bodies of the server API for operators and backends (``/api/admin``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from streams.permissions import Channel
from streams.presence import Record

#: ``type`` of a server event: dotted lower-case words (``announcement``, ``vendor.arrived``).
EventType = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Reason = Annotated[str, msgspec.Meta(max_length=120)]  # a WebSocket close reason's room

#: Event types the conflicts worker owns: clients fold ``entity.*`` into their state and act
#: on the others, so the server API may not forge them (change state with change frames).
RESERVED_TYPE_PREFIXES = ("entity.", "conflict.", "approval.", "timeline.", "guests.")


def reserved_type(event_type: str) -> bool:
    return event_type.startswith(RESERVED_TYPE_PREFIXES)


class ServerEventIn(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/admin/weddings/{id}/events``: ``id`` (optional) makes a retry idempotent:
    the same id within the events stream's duplicate window (5 min) is stored once."""

    channel: Channel
    type: EventType
    data: dict[str, Any] = {}
    id: IdempotencyKey | None = None


class ServerEventOut(msgspec.Struct):
    seq: int  # its position in WEDSYNC_EVENTS: it is durable
    id: str  # the event's id (as members receive it)
    duplicate: bool = False  # an earlier publish with the same ``id`` was stored already


class DisconnectIn(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/admin/weddings/{id}/users/{user_id}/disconnect``.

    Sockets close with 4505 (do not reconnect by yourself; the session still works), with
    4005 when ``reconnect`` (reconnect and resume at once: e.g. to move to another process)
    or with 4504 when ``end_sessions`` (the user's sessions of the wedding end too).
    """

    reason: Reason | None = None
    end_sessions: bool = False
    reconnect: bool = False


class DisconnectOut(msgspec.Struct):
    wedding_id: str
    user_id: str
    close_code: int
    sessions_ended: list[str]
    connections: int  # the user's sockets in the wedding (presence, all processes) before


class AdminPresence(msgspec.Struct):
    """Every presence record of the wedding (all roles, devices in reconnect grace too)."""

    wedding_id: str
    connections: list[Record]


class RoomInfo(msgspec.Struct):
    wedding_id: str
    connections: int  # open sockets (devices), all gateway processes
    users: int  # distinct users among them
    reconnecting: int  # devices in their reconnect grace (socket gone, leave pending)
    gateways: dict[str, int]  # gateway process id → its open sockets of this room


class RoomList(msgspec.Struct):
    rooms: list[RoomInfo]  # most connections first
    connections: int
    gateways: int  # gateway processes with a live presence heartbeat


class StreamStats(msgspec.Struct):
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int  # durable and ephemeral (the gateway's room subscriptions)


class ConsumerStats(msgspec.Struct):
    stream: str
    name: str
    pending: int  # matching messages not yet delivered: the lag
    ack_pending: int  # delivered, not acknowledged yet
    redelivered: int
    waiting: int  # pull requests waiting (workers idle and connected)
    delivered_seq: int  # last stream seq delivered


class ConnectionStats(msgspec.Struct):
    total: int  # open sockets of every gateway process (presence bucket)
    reconnecting: int
    rooms: int
    gateways: int
    this_process: int  # sockets of the process that answered


class DatabaseStats(msgspec.Struct):
    pool_size: int  # connections of the answering process's pool
    pool_idle: int


class Stats(msgspec.Struct):
    connections: ConnectionStats
    streams: list[StreamStats]
    consumers: list[ConsumerStats]  # durable consumers (the workers)
    consumers_truncated: bool  # a stream had more consumers than one stats call lists
    weddings: dict[str, int]  # by status
    active_sessions: int
    # notification deliveries not sent: pending (due or waiting for a retry), sending,
    # failed (webhook endpoint disabled) and dead (docs/notifications.md)
    outbox: dict[str, int]
    database: DatabaseStats
