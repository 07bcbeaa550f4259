"""Changes to wedding state on their way to the conflicts worker (stream WEDSYNC_CHANGES).

The gateway validates a ``change`` frame, stores it as a :class:`ChangeRequest` on
``wedsync.changes.<partition>.<wedding_id>`` and acks the client with its stream seq. The
HTTP approvals API stores a :class:`Decision` the same way, so decisions are ordered with
the changes they concern. One worker at a time applies each partition, in order.
"""

from __future__ import annotations

import zlib
from enum import StrEnum
from typing import Any

import msgspec

from streams.protocol import Actor
from streams.state import EntityKind, Op
from streams.subjects import CHANGES_ROOT, _token


class ChangeRequest(msgspec.Struct, frozen=True, tag="change"):
    client_id: str  # the frame's id: the author's acks and events name it
    wedding_id: str
    actor: Actor
    entity: EntityKind
    entity_id: str
    op: Op
    fields: dict[str, Any]  # validated against the kind's schema at the edge
    base_version: int | None
    ts: float


class Verdict(StrEnum):
    GRANT = "grant"
    DENY = "deny"
    EXPIRE = "expire"  # published by the worker itself when an approval times out


class Decision(msgspec.Struct, frozen=True, tag="decision"):
    wedding_id: str
    approval_id: str
    verdict: Verdict
    actor: Actor
    ts: float


ChangeMessage = ChangeRequest | Decision


def partition_of(wedding_id: str, partitions: int) -> int:
    """Deterministic: one wedding always lands in the same partition."""
    return zlib.crc32(wedding_id.encode()) % partitions


def change_subject(wedding_id: str, partitions: int) -> str:
    return f"{CHANGES_ROOT}.{partition_of(wedding_id, partitions)}.{_token(wedding_id)}"


def partition_filter(partition: int) -> str:
    return f"{CHANGES_ROOT}.{partition}.>"
