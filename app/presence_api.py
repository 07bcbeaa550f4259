"""``GET /api/weddings/{id}/presence``: who is here now, as the caller may see it."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, get
from litestar.datastructures import State

from app.access import require_member
from app.auth import Identity
from app.connections import Connections
from app.gateway import Hub
from streams.presence import UserPresence, can_see, group_by_user


class PresenceSnapshot(msgspec.Struct):
    wedding_id: str
    users: list[UserPresence]


class PresenceController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/presence"
    tags = ["presence"]  # noqa: RUF012

    @get("", summary="Connected members grouped by user, filtered by the presence visibility rule")
    async def snapshot(
        self, wedding_id: uuid.UUID, identity: Identity, state: State
    ) -> PresenceSnapshot:
        conns: Connections = state.conns
        hub: Hub = state.hub
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
        # a device within its reconnect grace still counts as here, as in the welcome
        records = [r for r in hub.presence_of(wedding_id) if can_see(m.role, r.role)]
        return PresenceSnapshot(wedding_id=str(wedding_id), users=group_by_user(records))
