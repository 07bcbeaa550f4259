"""``GET /api/weddings/{id}/events``: a wedding's history from JetStream, permission-filtered."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import Parameter

from app.access import require_member
from app.auth import Identity
from app.connections import Connections
from app.gateway.history import events_between
from app.history import last_seq
from streams.limits import INT64_MAX
from streams.permissions import permissions_for
from streams.protocol import EventPage
from streams.stored import placeholder, read_event


class EventsController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/events"
    tags = ["events"]  # noqa: RUF012

    @get("", summary="Events after a seq, oldest first, only channels the caller may read")
    async def history(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        state: State,
        after_seq: int = Parameter(default=0, ge=0, le=INT64_MAX),
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> EventPage:
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
        readable = {ch for ch, a in permissions_for(m.role, m.status).items() if a.read}
        return await event_page(conns, wedding_id, after_seq, limit, readable)


def page_item(seq: int, channel: str, data: bytes) -> dict[str, Any]:
    """One history item: the stored bytes as they are, or a placeholder (streams/stored.py)."""
    if read_event(data) is not None:
        return {"seq": seq, "event": msgspec.Raw(data)}
    return {"seq": seq, "event": placeholder(data, channel), "unreadable": True}


async def event_page(
    conns: Connections, wedding_id: uuid.UUID, after_seq: int, limit: int,
    readable: set[str] | None = None,
) -> EventPage:  # fmt: skip
    """Up to ``limit`` events after ``after_seq`` (JetStream and the archive), oldest first,
    only of ``readable`` channels (None: every channel)."""
    head = await last_seq(conns.js, conns.pool, wedding_id)
    events: list[dict[str, Any]] = []
    more = False
    replay = events_between(conns.js, conns.pool, wedding_id, after_seq, head)
    async with contextlib.aclosing(replay):
        async for seq, channel, data in replay:
            if readable is not None and channel not in readable:
                continue
            if len(events) == limit:
                more = True
                break
            events.append(page_item(seq, channel, data))
    return EventPage(
        events=events, last_seq=head, next_after_seq=events[-1]["seq"] if more else None
    )
