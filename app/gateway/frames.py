"""A socket's inbound frames: its reader, and what each client frame does (docs/protocol.md,
"Client → server")."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import msgspec
from litestar.exceptions import WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from app.gateway import session, signals
from app.gateway.connection import Connection, frame_text
from app.gateway.context import SocketContext
from app.gateway.limits import TokenBucket
from app.gateway.resume import resume
from config.telemetry import producing, span
from streams.changes import ChangeRequest, change_subject
from streams.definitions import CHANGES, EVENTS
from streams.presence import Editing
from streams.protocol import (
    AckFrame,
    Actor,
    ChangeFrame,
    ErrorCode,
    Event,
    FrameRefused,
    MessageFrame,
    PingFrame,
    PongFrame,
    PresenceFrame,
    ResumeFrame,
    SignalFrame,
    decode_client_frame,
)
from streams.state import CHANNEL_OF, EntityKind, FieldError, Op, validate_fields
from streams.subjects import wedding_subject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

EVENT_NAMESPACE = uuid.UUID("5b0e3c1e-2f0a-4d7e-9a51-8c8f2a6e7d10")

_encode = msgspec.json.Encoder()


class _Outage:
    """Publishes failing (NATS away): one log line when they start, one when they work again,
    not one per frame."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("publishing to JetStream failed (%r): frames get `unavailable`", exc)

    def ok(self) -> None:
        if self.since is not None:
            log.warning(
                "publishing works again after %.1fs (%d frames refused meanwhile)",
                time.monotonic() - self.since,
                self.failures,
            )
            self.since, self.failures = None, 0


_publish_outage = _Outage()


async def read(ctx: SocketContext) -> None:
    """The socket's reader: every client frame, in order, until the socket closes."""
    socket, hub, conn, settings = ctx.socket, ctx.hub, ctx.conn, ctx.gateway
    pool, ttl = ctx.conns.pool, ctx.settings.auth.session_ttl
    extender = hub.sessions
    bucket = TokenBucket(settings.rate, settings.burst)
    tally = hub.tally
    while not conn.closed:
        try:
            raw = await socket.receive_data("text")
        except WebSocketDisconnect:
            return
        await session.use(pool, extender, conn, ttl)  # every frame is use; expired: 4500
        if conn.closed:
            return
        tally.frames_in += 1
        try:  # size in bytes, shape, and storable (streams/limits.py)
            frame = decode_client_frame(raw, settings.max_frame)
        except FrameRefused as refused:
            conn.refuse(refused.code, refused.message, refused.frame_id)
            continue
        if isinstance(frame, PingFrame):
            conn.send(frame_text(PongFrame()))
        elif isinstance(frame, PresenceFrame):
            if bucket.take():  # a presence frame costs what a message does
                await _presence(ctx, frame)
            else:
                _limited(ctx, None)
        elif isinstance(frame, SignalFrame):  # ephemeral: never stored (app/gateway/signals.py)
            if not bucket.take():
                _limited(ctx, None)
            elif (why := signals.refused(conn, frame)) is not None:
                conn.refuse(*why)
            else:
                await signals.publish(ctx.conns.nc, conn, frame)
        elif isinstance(frame, ResumeFrame):  # charged by its size (app/gateway/limits.py)
            ctx.spawn("resume", resume(ctx, frame.after_seq, frame.epoch))
        elif isinstance(frame, MessageFrame | ChangeFrame):
            if not bucket.take():
                _limited(ctx, frame.id)
                continue
            if (retry := hub.admission.refuse()) is not None:
                conn.refuse(
                    ErrorCode.OVERLOADED,
                    "server overloaded: not stored; resend the same frame later",
                    frame.id,
                    retry_after=retry,
                )
                continue
            # a trace starts at each frame that stores something: it follows the message
            # through JetStream into the workers (W3C traceparent in NATS headers)
            with span(
                tracer,
                "ws message" if isinstance(frame, MessageFrame) else "ws change",
                SpanKind.SERVER,
                {
                    "wedsync.wedding_id": str(conn.wedding_id),
                    "wedsync.frame_id": frame.id,
                    "enduser.id": conn.user_id,
                },
            ):
                if isinstance(frame, MessageFrame):
                    stored = await _publish(ctx, frame)
                else:
                    stored = await _change(ctx, frame)
            tally.published += stored
            await hub.tracker.activity(conn.presence)


def _limited(ctx: SocketContext, frame_id: str | None) -> None:
    limit = f"over {ctx.gateway.rate:g} frames per second"
    ctx.conn.refuse(ErrorCode.RATE_LIMITED, limit, frame_id)


async def _presence(ctx: SocketContext, frame: PresenceFrame) -> None:
    conn, tracker = ctx.conn, ctx.hub.tracker
    if isinstance(frame.editing, Editing) and (refused := _editing_refused(conn, frame.editing)):
        conn.refuse(*refused)
        return
    fields = {k: v for k, v in msgspec.structs.asdict(frame).items() if v is not msgspec.UNSET}
    try:
        if fields:
            await tracker.change(conn.presence, **fields)
        else:
            await tracker.activity(conn.presence)
    except Exception as exc:
        log.warning("presence update failed: %r", exc)
        conn.refuse(ErrorCode.UNAVAILABLE, "presence not updated; retry")


def _editing_refused(conn: Connection, editing: Editing) -> tuple[ErrorCode, str] | None:
    """Editing names a field of a shared entity the member may read (others are told)."""
    try:
        kind = EntityKind(editing.entity)
    except ValueError:
        kinds = ", ".join(k.value for k in EntityKind)
        return ErrorCode.INVALID, f"editing.entity must be one of {kinds}"
    if CHANNEL_OF[kind] not in conn.readable:
        return ErrorCode.FORBIDDEN, f"{conn.role.value} may not read {kind.value}"
    return None


async def _publish(ctx: SocketContext, frame: MessageFrame) -> bool:
    conn = ctx.conn
    if not conn.can_write(frame.channel):
        conn.refuse(
            ErrorCode.FORBIDDEN, f"{conn.role.value} may not write {frame.channel.value}", frame.id
        )
        return False
    event = Event(
        id=str(uuid.uuid5(EVENT_NAMESPACE, f"{conn.session_id}:{frame.id}")),
        type="message",
        channel=frame.channel,
        actor=Actor(user_id=conn.user_id, role=conn.role),
        data=frame.data,
        ts=time.time(),
    )
    subject = wedding_subject(conn.wedding_id, frame.channel)
    return await _store(ctx, frame.id, subject, EVENTS.name, _encode.encode(event))


async def _store(
    ctx: SocketContext, frame_id: str, subject: str, stream: str, payload: bytes
) -> bool:
    """Publish, and ack the client only once JetStream has stored it (deduplicated by the
    session and frame id, so a frame re-sent after a reconnect is stored once)."""
    conn, admission = ctx.conn, ctx.hub.admission
    admission.inflight += 1
    try:
        headers = {"Nats-Msg-Id": f"{conn.session_id}:{frame_id}"}
        with producing(tracer, stream, subject, headers):
            ack = await ctx.conns.js.publish(subject, payload, stream=stream, headers=headers)
    except Exception as exc:  # not durable: the client must retry with the same id
        _publish_outage.failed(exc)
        conn.refuse(ErrorCode.UNAVAILABLE, "not stored; retry with the same id", frame_id)
        return False
    finally:
        admission.inflight -= 1
    _publish_outage.ok()
    conn.send(frame_text(AckFrame(id=frame_id, seq=ack.seq)))
    return True


async def _change(ctx: SocketContext, frame: ChangeFrame) -> bool:
    """Validate a state change at the edge and queue it for the conflicts worker."""
    conn, contacts = ctx.conn, ctx.hub.contacts

    def refuse(code: ErrorCode, message: str) -> bool:
        conn.refuse(code, message[:200], frame.id)
        return False

    channel = CHANNEL_OF[frame.entity]
    if not conn.can_write(channel):
        return refuse(ErrorCode.FORBIDDEN, f"{conn.role.value} may not write {channel.value}")
    if (frame.op is Op.CREATE) != (frame.base_version is None):
        return refuse(ErrorCode.INVALID, "base_version is null on create and required otherwise")
    try:
        if frame.op is Op.DELETE:
            if frame.fields:
                raise FieldError("a delete carries no fields")
            fields: dict[str, Any] = {}
        else:
            fields = validate_fields(frame.entity, frame.op, frame.fields)
    except FieldError as exc:
        return refuse(ErrorCode.INVALID, str(exc))
    if conn.scope is not None:  # a vendor's records stay theirs (the worker checks the rest)
        refused = conn.scope.check_change(frame.entity, frame.op, frame.fields, fields)
        if refused:
            return refuse(ErrorCode.FORBIDDEN, refused)
    if contacts is not None:  # encrypted from here on: JetStream, the worker, PostgreSQL
        fields = contacts.seal(frame.entity, fields)
    wedding = str(conn.wedding_id)
    change = ChangeRequest(
        client_id=frame.id,
        wedding_id=wedding,
        actor=Actor(user_id=conn.user_id, role=conn.role),
        entity=frame.entity,
        entity_id=frame.entity_id,
        op=frame.op,
        fields=fields,
        base_version=frame.base_version,
        ts=time.time(),
    )
    subject = change_subject(wedding, ctx.settings.conflicts.partitions)
    return await _store(ctx, frame.id, subject, CHANGES.name, _encode.encode(change))
