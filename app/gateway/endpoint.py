"""``/ws/weddings/{wedding_id}``: the WebSocket edge of a wedding room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from app.connections import Connections
from app.db import sessions as session_store
from app.db import weddings as wedding_store
from app.gateway.connection import Connection
from app.gateway.history import events_between, fully_held
from app.gateway.hub import Hub
from app.history import last_seq
from app.presence import Presence
from config.settings import GatewaySettings
from config.telemetry import producing, span
from streams.changes import ChangeRequest, change_subject
from streams.definitions import CHANGES, EVENTS
from streams.permissions import WeddingStatus, permissions_for
from streams.presence import UserPresence, can_see, group_by_user
from streams.protocol import (
    AckFrame,
    Actor,
    ChangeFrame,
    Close,
    ErrorFrame,
    Event,
    FrameRefused,
    MessageFrame,
    PingFrame,
    PongFrame,
    PresenceFrame,
    ResumedFrame,
    ResumeFrame,
    WelcomeFrame,
    decode_client_frame,
    event_frame,
)
from streams.state import CHANNEL_OF, FieldError, Op, validate_fields
from streams.subjects import wedding_subject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# a batched message stops growing past this many bytes (frames are never split)
BATCH_BYTES = 64 * 1024

EVENT_NAMESPACE = uuid.UUID("5b0e3c1e-2f0a-4d7e-9a51-8c8f2a6e7d10")

_encode = msgspec.json.Encoder()


def _frame(obj: Any) -> str:
    return _encode.encode(obj).decode()


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


async def _authenticate(
    socket: WebSocket[Any, Any, Any], conns: Connections, wedding_id: uuid.UUID,
    settings: GatewaySettings,
) -> Connection | None:  # fmt: skip
    token = socket.query_params.get("token") or ""
    async with conns.pool.acquire() as db:
        session = await session_store.by_token(db, token) if token else None
        if session is None:
            await socket.close(Close.INVALID_SESSION, "unknown, expired or ended session")
            return None
        m = await wedding_store.membership(db, wedding_id, session["user_id"])
        if session["wedding_id"] != wedding_id or m is None or m.status == WeddingStatus.CANCELLED:
            await socket.close(Close.FORBIDDEN, "this session may not open this wedding")
            return None
    presence = Presence(str(wedding_id), str(session["id"]), session["user_id"], m.role,
                        m.display_name)  # fmt: skip
    return Connection(wedding_id=wedding_id, session_id=session["id"],
                      user_id=session["user_id"], role=m.role, status=m.status,
                      queue_size=settings.queue, presence=presence,
                      batch=socket.query_params.get("batch") == "1")  # fmt: skip


def _snapshot(hub: Hub, conn: Connection) -> list[UserPresence]:
    """The room's presence as this member may see it (its own record included)."""
    records = {r.connection_id: r for r in hub.presence_of(conn.wedding_id)}
    if conn.presence.record is not None:
        records[conn.presence.connection_id] = conn.presence.record
    return group_by_user([r for r in records.values() if can_see(conn.role, r.role)])


@websocket("/ws/weddings/{wedding_id:uuid}")
async def wedding_socket(socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID) -> None:
    """Unexpected failures close with 4002 (reconnect and resume), never with Litestar's
    default 4500, which our protocol reserves for an invalid session (terminal)."""
    try:
        await _serve(socket, wedding_id)
    except Exception:
        log.exception("websocket handler failed")
        if socket.connection_state != "disconnect":
            with contextlib.suppress(Exception):
                await socket.close(Close.SERVER_ERROR, "internal error: reconnect and resume")


async def _serve(socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID) -> None:
    conns: Connections = socket.app.state.conns
    hub: Hub = socket.app.state.hub
    await socket.accept()
    settings: GatewaySettings = socket.app.state.settings.gateway
    conn = await _authenticate(socket, conns, wedding_id, settings)
    if conn is None:
        return
    if not await hub.join(conn):  # the room's live subscription exists from here on
        await socket.close(Close.TRY_LATER, "too many open connections for this user")
        return
    writer = asyncio.create_task(_write(socket, conn, hub))
    tasks: set[asyncio.Task[None]] = set()
    reader: asyncio.Task[None] | None = None
    tracker = hub.tracker
    try:
        await tracker.connect(conn.presence)
        head = hub.head(wedding_id)
        conn.last_sent = head
        conn.send(_frame(WelcomeFrame(
            session_id=str(conn.session_id), user_id=conn.user_id, role=conn.role,
            permissions=permissions_for(conn.role, conn.status), last_seq=head, epoch=hub.epoch,
            presence=_snapshot(hub, conn),
        )))  # fmt: skip
        conn.welcomed = True
        after = socket.query_params.get("after_seq")
        if after is not None and after.isascii() and after.isdigit():  # not "²"
            _spawn(tasks, _resume(conns, hub, conn, int(after), socket.query_params.get("epoch")))
        else:
            conn.finish_replay()  # live from the welcome's last_seq on
        reader = asyncio.create_task(_read(socket, conns, hub, conn, tasks, settings))
        closing = asyncio.ensure_future(conn.close_requested.wait())
        await asyncio.wait({reader, closing}, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
    except Exception:
        log.exception("websocket session failed")
        conn.request_close(Close.SERVER_ERROR, "internal error: reconnect and resume")
    finally:
        await hub.leave(conn)
        for t in (*tasks, *([reader] if reader else [])):
            t.cancel()
        try:
            await tracker.disconnect(conn.presence)
        except Exception as exc:  # NATS gone: the expiry worker removes the record
            log.warning("presence disconnect failed: %r", exc)
        conn.request_close(1000, "")
        try:  # a writer stuck on a peer that does not read is abandoned
            await asyncio.wait_for(writer, 2)
        except (TimeoutError, asyncio.CancelledError, Exception):
            writer.cancel()
        if socket.connection_state != "disconnect":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(conn.close_code, conn.close_reason[:120]), 2)


def _spawn(tasks: set[asyncio.Task[None]], coro: Any) -> None:
    t = asyncio.create_task(coro)
    tasks.add(t)
    t.add_done_callback(tasks.discard)


async def _write(socket: WebSocket[Any, Any, Any], conn: Connection, hub: Hub) -> None:
    """The socket's only writer: sends queued frames in order until a close is requested
    (what is still queued then is dropped; request_close wakes a waiting writer). One plain
    ``queue.get()`` per frame: no task or wait set per frame on this hot path."""
    tally, queue = hub.tally, conn.queue
    try:
        while not conn.closed:
            text = await queue.get()
            if conn.closed:
                return
            frames = 1
            if conn.batch and not queue.empty():  # a backlog: one message, one syscall
                parts, size = [text], len(text)
                while size < BATCH_BYTES and not queue.empty():
                    more = queue.get_nowait()
                    if conn.closed:
                        return
                    parts.append(more)
                    size += len(more) + 1
                text, frames = "\n".join(parts), len(parts)
            await socket.send_text(text)
            tally.frames_out += frames
    except (WebSocketDisconnect, RuntimeError, OSError):
        conn.request_close(1000, "")


async def _read(
    socket: WebSocket[Any, Any, Any], conns: Connections, hub: Hub, conn: Connection,
    tasks: set[asyncio.Task[None]], settings: GatewaySettings,
) -> None:  # fmt: skip
    bucket = TokenBucket(settings.rate, settings.burst)
    tally = hub.tally
    while not conn.closed:
        try:
            raw = await socket.receive_data("text")
        except WebSocketDisconnect:
            return
        tally.frames_in += 1
        try:  # size in bytes, shape, and storable (streams/limits.py)
            frame = decode_client_frame(raw, settings.max_frame)
        except FrameRefused as refused:
            conn.send(_frame(ErrorFrame(code=refused.code, message=refused.message)))
            continue
        if isinstance(frame, PingFrame):
            conn.send(_frame(PongFrame()))
        elif isinstance(frame, PresenceFrame):
            await _presence(hub, conn, frame)
        elif isinstance(frame, ResumeFrame):
            _spawn(tasks, _resume(conns, hub, conn, frame.after_seq, frame.epoch))
        elif isinstance(frame, MessageFrame | ChangeFrame):
            if not bucket.take():
                limit = f"over {settings.rate:g} messages per second"
                conn.send(_frame(ErrorFrame(id=frame.id, code="rate_limited", message=limit)))
                continue
            # a trace starts at each frame that stores something: it follows the message
            # through JetStream into the workers (W3C traceparent in NATS headers)
            with span(
                tracer, "ws message" if isinstance(frame, MessageFrame) else "ws change",
                SpanKind.SERVER, {"wedsync.wedding_id": str(conn.wedding_id),
                                  "wedsync.frame_id": frame.id, "enduser.id": conn.user_id},
            ):  # fmt: skip
                if isinstance(frame, MessageFrame):
                    stored = await _publish(conns, conn, frame)
                else:
                    parts = socket.app.state.settings.conflicts.partitions
                    stored = await _change(conns, conn, frame, parts)
            tally.published += stored
            await hub.tracker.activity(conn.presence)


async def _presence(hub: Hub, conn: Connection, frame: PresenceFrame) -> None:
    fields = {k: v for k, v in msgspec.structs.asdict(frame).items() if v is not msgspec.UNSET}
    try:
        if fields:
            await hub.tracker.change(conn.presence, **fields)
        else:
            await hub.tracker.activity(conn.presence)
    except Exception as exc:
        log.warning("presence update failed: %r", exc)
        conn.send(_frame(ErrorFrame(code="unavailable", message="presence not updated; retry")))


async def _publish(conns: Connections, conn: Connection, frame: MessageFrame) -> bool:
    if not conn.can_write(frame.channel):
        conn.send(_frame(ErrorFrame(id=frame.id, code="forbidden",
                                    message=f"{conn.role.value} may not write {frame.channel.value}")))  # fmt: skip  # noqa: E501
        return False
    event = Event(
        id=str(uuid.uuid5(EVENT_NAMESPACE, f"{conn.session_id}:{frame.id}")), type="message",
        channel=frame.channel, actor=Actor(user_id=conn.user_id, role=conn.role),
        data=frame.data, ts=time.time(),
    )  # fmt: skip
    subject = wedding_subject(conn.wedding_id, frame.channel)
    return await _store(conns, conn, frame.id, subject, EVENTS.name, _encode.encode(event))


async def _store(conns: Connections, conn: Connection, frame_id: str, subject: str, stream: str,
                 payload: bytes) -> bool:  # fmt: skip
    """Publish, and ack the client only once JetStream has stored it (deduplicated by the
    session and frame id, so a frame re-sent after a reconnect is stored once)."""
    try:
        headers = {"Nats-Msg-Id": f"{conn.session_id}:{frame_id}"}
        with producing(tracer, stream, subject, headers):
            ack = await conns.js.publish(subject, payload, stream=stream, headers=headers)
    except Exception as exc:  # not durable: the client must retry with the same id
        log.warning("publish failed: %r", exc)
        conn.send(_frame(ErrorFrame(id=frame_id, code="unavailable",
                                    message="not stored; retry with the same id")))  # fmt: skip
        return False
    conn.send(_frame(AckFrame(id=frame_id, seq=ack.seq)))
    return True


async def _change(
    conns: Connections, conn: Connection, frame: ChangeFrame, partitions: int
) -> bool:
    """Validate a state change at the edge and queue it for the conflicts worker."""

    def refuse(code: str, message: str) -> bool:
        conn.send(_frame(ErrorFrame(id=frame.id, code=code, message=message[:200])))
        return False

    channel = CHANNEL_OF[frame.entity]
    if not conn.can_write(channel):
        return refuse("forbidden", f"{conn.role.value} may not write {channel.value}")
    if (frame.op is Op.CREATE) != (frame.base_version is None):
        return refuse("invalid", "base_version is null on create and required otherwise")
    try:
        if frame.op is Op.DELETE:
            if frame.fields:
                raise FieldError("a delete carries no fields")
            fields: dict[str, Any] = {}
        else:
            fields = validate_fields(frame.entity, frame.op, frame.fields)
    except FieldError as exc:
        return refuse("invalid", str(exc))
    wedding = str(conn.wedding_id)
    change = ChangeRequest(
        client_id=frame.id, wedding_id=wedding, actor=Actor(user_id=conn.user_id, role=conn.role),
        entity=frame.entity, entity_id=frame.entity_id, op=frame.op, fields=fields,
        base_version=frame.base_version, ts=time.time(),
    )  # fmt: skip
    return await _store(conns, conn, frame.id, change_subject(wedding, partitions),
                        CHANGES.name, _encode.encode(change))  # fmt: skip


async def _resume(
    conns: Connections, hub: Hub, conn: Connection, after_seq: int, epoch: str | None
) -> None:
    """Replay what the client missed, then hand over to live events: no gap, no duplicate.

    A position from another epoch of the stream (it was recreated) means nothing here:
    nothing is replayed and ``recovered`` is false, so the client reloads state over HTTP.
    """
    if conn.resuming:
        conn.send(_frame(ErrorFrame(code="invalid", message="a resume is already running")))
        return
    conn.resuming = conn.replaying = True  # live events are held from here
    try:
        # what is stored now (the room's cached head may name a since-purged event);
        # anything newer is held while we replay
        upto = await last_seq(conns.js, conns.pool, conn.wedding_id)
        if epoch not in (None, hub.epoch) or after_seq > upto:
            recovered = False  # a position from a recreated stream: skip to now
        else:
            recovered = await fully_held(conns.js, conns.pool, conn.wedding_id, after_seq)
            conn.last_sent = after_seq
            async for seq, channel, data in events_between(
                conns.js, conns.pool, conn.wedding_id, after_seq, upto
            ):
                await conn.replayed(seq, channel, event_frame(seq, data))
        conn.last_sent = max(conn.last_sent, upto)
        done = ResumedFrame(after_seq=after_seq, last_seq=conn.last_sent, recovered=recovered,
                            epoch=hub.epoch)  # fmt: skip
        await conn.queue.put(_frame(done))
    finally:
        conn.resuming = False
        conn.finish_replay()  # held live events after the replayed ones, none twice
