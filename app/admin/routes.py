"""The server API for operators and backends: ``/api/admin``, guarded by the admin token.

Every route needs ``Authorization: Bearer <WEDSYNC_ADMIN_TOKEN>`` (compared in constant
time); a user JWT is not accepted here, and with no admin token configured every call is
refused. Rooms and presence come from this process's mirror of the presence bucket, which
holds every connection of every gateway process.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from opentelemetry import trace

from app.admin import store
from app.auth import AuthContext, client_ip
from app.errors import Conflict, Invalid, NotFound, TooLarge, Unauthorized, Unavailable
from app.events.routes import event_page
from app.gateway import Hub
from app.services import Services
from app.sessions import store as session_store
from app.weddings import store as wedding_store
from config.telemetry import producing
from runtime import control
from runtime.connections import Connections
from runtime.db import audit
from runtime.db import scope as db_scope
from runtime.db.types import Conn, Pooled
from streams.admin import (
    AdminPresence,
    ConnectionStats,
    ConsumerStats,
    DatabaseStats,
    DisconnectIn,
    DisconnectOut,
    RoomInfo,
    RoomList,
    ServerEventIn,
    ServerEventOut,
    Stats,
    StreamStats,
    reserved_type,
)
from streams.definitions import EVENTS, STREAMS
from streams.limits import INT64_MAX
from streams.permissions import WeddingStatus
from streams.presence import Record
from streams.protocol import SERVER_ACTOR, Close, Event, EventPage
from streams.subjects import wedding_subject

log = logging.getLogger(__name__)

#: server events' ids: uuid5 of (wedding, idempotency key) when the caller gives a key
SERVER_EVENT_NAMESPACE = uuid.UUID("9c4f2a7e-3b1d-4e8a-b6f5-2d7c1e9a0b34")
#: the audit log's actor for what the admin API did
AUDIT_ACTOR = "admin-api"
#: consumers listed per stream by one stats call (the server lists 256 per request)
_CONSUMER_PAGES = 8

_encode = msgspec.json.Encoder()
tracer = trace.get_tracer(__name__)


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every admin route: 401 ``unauthorized`` unless the admin bearer token."""
    expected = Services.of(connection.app.state).settings.auth.admin_token
    if not expected:
        raise Unauthorized("the admin API is disabled: no WEDSYNC_ADMIN_TOKEN is configured")
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing admin bearer token")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("wrong admin token")


async def _wedding_status(conn: Conn, wedding_id: uuid.UUID) -> WeddingStatus:
    status = await wedding_store.status(conn, wedding_id)
    if status is None:
        raise NotFound("wedding not found")
    return status


def _live(records: list[Record]) -> list[Record]:
    return [r for r in records if r.disconnected_at is None]


class AdminController(Controller):
    path = "/api/admin"
    tags = ["admin"]  # noqa: RUF012
    guards = [require_admin]  # noqa: RUF012

    @post(
        "/weddings/{wedding_id:uuid}/events",
        status_code=201,
        summary="Publish a server event to a wedding channel; 201 once JetStream stored it",
    )
    async def publish(
        self, wedding_id: uuid.UUID, data: ServerEventIn, conns: Connections
    ) -> ServerEventOut:
        if reserved_type(data.type):
            raise Invalid(f"event type {data.type!r} is reserved for the conflicts worker")
        async with conns.pool.acquire() as conn:
            if await _wedding_status(conn, wedding_id) == WeddingStatus.CANCELLED:
                raise Conflict("this wedding was cancelled")
        headers: dict[str, str] = {}
        if data.id is not None:
            event_id = str(uuid.uuid5(SERVER_EVENT_NAMESPACE, f"{wedding_id}:{data.id}"))
            headers["Nats-Msg-Id"] = f"admin:{wedding_id}:{data.id}"
        else:
            event_id = str(uuid.uuid4())
        event = Event(
            id=event_id,
            type=data.type,
            channel=data.channel,
            actor=SERVER_ACTOR,
            data=data.data,
            ts=time.time(),
        )
        subject = wedding_subject(wedding_id, data.channel)
        payload = _encode.encode(event)
        if len(payload) > conns.nc.max_payload:  # NATS would refuse it, every time
            raise TooLarge(f"the event is over {conns.nc.max_payload} bytes")
        try:
            with producing(tracer, EVENTS.name, subject, headers):  # the request's trace
                ack = await conns.js.publish(
                    subject, payload, stream=EVENTS.name, headers=headers or None
                )
        except Exception as exc:
            log.warning("server event not stored: %r", exc)
            raise Unavailable("not stored; retry (with the same id)") from None
        return ServerEventOut(seq=ack.seq, id=event_id, duplicate=bool(ack.duplicate))

    @get(
        "/weddings/{wedding_id:uuid}/events",
        summary="A wedding's events after a seq, oldest first, every channel",
    )
    async def history(
        self,
        wedding_id: uuid.UUID,
        conns: Connections,
        auth: AuthContext,
        after_seq: int = Parameter(default=0, ge=0, le=INT64_MAX),
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> EventPage:
        async with conns.pool.acquire() as conn:
            await _wedding_status(conn, wedding_id)
        contacts = auth.contacts
        return await event_page(conns, wedding_id, after_seq, limit, contacts=contacts)

    @get(
        "/weddings/{wedding_id:uuid}/presence",
        summary="Every presence record of a wedding: all roles, all gateway processes",
    )
    async def presence(self, wedding_id: uuid.UUID, db: Pooled, hub: Hub) -> AdminPresence:
        await _wedding_status(db, wedding_id)
        records = sorted(
            hub.presence_of(wedding_id), key=lambda r: (r.user_id, r.connected_at, r.connection_id)
        )
        return AdminPresence(wedding_id=str(wedding_id), connections=records)

    @post(
        "/weddings/{wedding_id:uuid}/users/{user_id:str}/disconnect",
        status_code=200,
        summary="Close a user's sockets in a wedding on every gateway process",
    )
    async def disconnect(
        self,
        wedding_id: uuid.UUID,
        user_id: str,
        conns: Connections,
        hub: Hub,
        request: Request[Any, Any, Any],
        data: DisconnectIn | None = None,
    ) -> DisconnectOut:
        body = data or DisconnectIn()
        if body.end_sessions:
            code = Close.SESSION_ENDED
        else:
            code = Close.RECONNECT if body.reconnect else Close.DISCONNECTED
        ended: list[uuid.UUID] = []
        async with conns.pool.acquire() as conn:
            await _wedding_status(conn, wedding_id)
            async with conn.transaction():
                if body.end_sessions:
                    ended = await session_store.end(conn, wedding_id, user_id, "admin")
                await audit.record(
                    conn,
                    wedding_id,
                    AUDIT_ACTOR,
                    "admin_disconnect",
                    client_ip(request),
                    user_id=user_id,
                    close_code=code,
                    reason=body.reason,
                    sessions=[str(s) for s in ended],
                )
        open_before = sum(1 for r in _live(hub.presence_of(wedding_id)) if r.user_id == user_id)
        default = (
            "session ended by an operator"
            if body.end_sessions
            else ("reconnect, please" if body.reconnect else "disconnected by an operator")
        )
        try:
            await control.disconnect(
                conns.nc, wedding_id, user_id, code=code, reason=body.reason or default
            )
        except Exception as exc:
            log.warning("disconnect control message not sent: %r", exc)
            raise Unavailable("not sent to the gateways; retry") from None
        return DisconnectOut(
            wedding_id=str(wedding_id),
            user_id=user_id,
            close_code=code,
            sessions_ended=[str(s) for s in ended],
            connections=open_before,
        )

    @get("/rooms", summary="Active rooms of every gateway process, with connection counts")
    async def rooms(self, hub: Hub) -> RoomList:
        table = await hub.presence_everywhere()
        rooms: list[RoomInfo] = []
        for wedding_id, room in list(table.weddings.items()):
            records = [s.record for s in room.values()]
            live = _live(records)
            per_gateway: dict[str, int] = {}
            for r in live:
                per_gateway[r.gateway] = per_gateway.get(r.gateway, 0) + 1
            rooms.append(
                RoomInfo(
                    wedding_id=wedding_id,
                    connections=len(live),
                    users=len({r.user_id for r in live}),
                    reconnecting=len(records) - len(live),
                    gateways=per_gateway,
                )
            )
        rooms.sort(key=lambda r: (-r.connections, r.wedding_id))
        return RoomList(
            rooms=rooms, connections=sum(r.connections for r in rooms), gateways=len(table.gateways)
        )

    @get("/stats", summary="Connections, rooms, streams, consumer lag, sessions, outbox")
    async def stats(self, conns: Connections, hub: Hub) -> Stats:
        table = await hub.presence_everywhere()
        records = [s.record for s in table]
        live = _live(records)
        streams: list[StreamStats] = []
        consumers: list[ConsumerStats] = []
        truncated = False
        for spec in STREAMS:
            try:
                info = await conns.js.stream_info(spec.name)
            except Exception as exc:
                log.warning("stream %s: no info: %r", spec.name, exc)
                continue
            s = info.state
            streams.append(
                StreamStats(
                    spec.name, s.messages, s.bytes, s.first_seq, s.last_seq, s.consumer_count
                )
            )
            listed = 0
            for _page in range(_CONSUMER_PAGES):
                page = await conns.js.consumers_info(spec.name, offset=listed)
                listed += len(page)
                for c in page:
                    if not c.config.durable_name:
                        continue  # the gateway's ordered room consumers, history reads
                    consumers.append(
                        ConsumerStats(
                            stream=spec.name,
                            name=c.name,
                            pending=c.num_pending or 0,
                            ack_pending=c.num_ack_pending or 0,
                            redelivered=c.num_redelivered or 0,
                            waiting=c.num_waiting or 0,
                            delivered_seq=c.delivered.stream_seq if c.delivered else 0,
                        )
                    )
                if not page or listed >= s.consumer_count:
                    break
            truncated = truncated or listed < s.consumer_count
        consumers.sort(key=lambda c: (c.stream, c.name))
        async with db_scope.system_connection(  # the operator's counts over every wedding
            conns.pool, "admin stats: counts over every wedding"
        ) as conn:
            counted = await store.counts(conn)
        active_rooms = sum(
            1
            for room in table.weddings.values()
            if any(s.record.disconnected_at is None for s in room.values())
        )
        return Stats(
            connections=ConnectionStats(
                total=len(live),
                reconnecting=len(records) - len(live),
                rooms=active_rooms,
                gateways=len(table.gateways),
                this_process=hub.connection_count,
            ),
            streams=streams,
            consumers=consumers,
            consumers_truncated=truncated,
            weddings={s.value: counted.weddings.get(s.value, 0) for s in WeddingStatus},
            active_sessions=counted.active_sessions,
            outbox={k: counted.outbox.get(k, 0) for k in ("pending", "sending", "failed", "dead")},
            database=DatabaseStats(
                pool_size=conns.pool.get_size(), pool_idle=conns.pool.get_idle_size()
            ),
        )
