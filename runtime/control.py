"""Telling every gateway process about session and membership changes (core NATS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS

from streams.permissions import Role, WeddingStatus
from streams.protocol import (
    Close,
    ControlMessage,
    Disconnect,
    RoleChanged,
    SessionsEnded,
    StatusChanged,
)
from streams.subjects import control_subject


async def sessions_ended(nc: NATS, wedding_id: uuid.UUID, session_ids: Iterable[uuid.UUID]) -> None:
    ids = [str(s) for s in session_ids]
    if ids:
        await _publish(nc, wedding_id, SessionsEnded(session_ids=ids))


async def role_changed(nc: NATS, wedding_id: uuid.UUID, user_id: str, role: Role | None) -> None:
    """``role`` None: the member was removed."""
    await _publish(nc, wedding_id, RoleChanged(user_id=user_id, role=role))


async def status_changed(nc: NATS, wedding_id: uuid.UUID, status: WeddingStatus) -> None:
    """Every gateway process applies the wedding's new status to its open sockets (completed:
    read-only from now on; cancelled: closed with 4503)."""
    await _publish(nc, wedding_id, StatusChanged(status=status))
    await nc.flush()


async def disconnect(
    nc: NATS, wedding_id: uuid.UUID, user_id: str, *, code: Close, reason: str
) -> None:
    """Every gateway process closes ``user_id``'s sockets in the wedding with ``code``."""
    await _publish(nc, wedding_id, Disconnect(user_id=user_id, code=code, reason=reason))
    await nc.flush()  # sent before the caller answers: the sockets close right after


async def _publish(nc: NATS, wedding_id: uuid.UUID, msg: ControlMessage) -> None:
    await nc.publish(control_subject(wedding_id), msgspec.json.encode(msg))
