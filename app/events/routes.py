"""``GET /api/weddings/{id}/events``: a wedding's history from JetStream, permission-filtered
(channels by role, a vendor's tasks and vendor records by record-level scope)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.params import Parameter

from app.auth import AuthContext, GuestContacts, Identity
from app.weddings.access import require_member
from runtime.connections import Connections
from runtime.eventlog import events_between, last_seq
from streams.limits import INT64_MAX
from streams.permissions import Channel, permissions_for
from streams.protocol import EventPage
from streams.scope import RecordScope
from streams.stored import placeholder, read_event


class EventsController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/events"
    tags = ["events"]  # noqa: RUF012

    @get("", summary="Events after a seq, oldest first, only channels the caller may read")
    async def history(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        after_seq: int = Parameter(default=0, ge=0, le=INT64_MAX),
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> EventPage:
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
        readable = {ch for ch, a in permissions_for(m.role, m.status).items() if a.read}
        scope = RecordScope.of(m.role, identity.user_id)
        return await event_page(conns, wedding_id, after_seq, limit, readable, auth.contacts, scope)


def _scoped_item(scope: RecordScope, seq: int, channel: str, data: bytes) -> dict[str, Any] | None:
    """A history item as a record-level ``scope`` shows it (None: not shown at all)."""
    if read_event(data) is None:
        return {"seq": seq, "event": placeholder(data, channel), "unreadable": True}
    event = scope.view(msgspec.json.decode(data))
    return None if event is None else {"seq": seq, "event": event}


def page_item(seq: int, channel: str, data: bytes) -> dict[str, Any]:
    """One history item: the stored bytes as they are, or a placeholder (streams/stored.py)."""
    if read_event(data) is not None:
        return {"seq": seq, "event": msgspec.Raw(data)}
    return {"seq": seq, "event": placeholder(data, channel), "unreadable": True}


async def event_page(
    conns: Connections,
    wedding_id: uuid.UUID,
    after_seq: int,
    limit: int,
    readable: set[str] | None = None,
    contacts: GuestContacts | None = None,
    scope: RecordScope | None = None,
) -> EventPage:
    """Up to ``limit`` events after ``after_seq`` (JetStream and the archive), oldest first,
    only of ``readable`` channels (None: every channel), as ``scope`` shows them (as the
    reader's socket does: the same filter and removals); guest contacts opened with
    ``contacts`` (None: served as stored)."""
    head = await last_seq(conns.js, conns.pool, wedding_id)
    events: list[dict[str, Any]] = []
    more = False
    replay = events_between(conns.js, conns.pool, wedding_id, after_seq, head)
    async with contextlib.aclosing(replay):
        async for seq, channel, data in replay:
            if readable is not None and channel not in readable:
                continue
            if channel == Channel.GUESTS.value and contacts is not None:
                data = contacts.open_event_bytes(data)
            if scope is not None and channel in scope.channels:
                item = _scoped_item(scope, seq, channel, data)
                if item is None:
                    continue  # not the vendor's record: not theirs to see
            else:
                item = page_item(seq, channel, data)
            if len(events) == limit:
                more = True
                break
            events.append(item)
    return EventPage(
        events=events, last_seq=head, next_after_seq=events[-1]["seq"] if more else None
    )
