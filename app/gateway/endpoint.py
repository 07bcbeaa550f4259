"""``/ws/weddings/{wedding_id}``: the WebSocket edge of a wedding room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from app.auth import admit_handshake
from app.connections import Connections
from app.cors import admit_origin
from app.gateway import session
from app.gateway.connection import Connection
from app.gateway.handshake import admit
from app.gateway.history import events_between, fully_held, same_epoch
from app.gateway.hub import GUESTS, Hub
from app.gateway.limits import TokenBucket
from app.history import last_seq
from config.settings import GatewaySettings
from config.telemetry import producing, span
from streams.changes import ChangeRequest, change_subject
from streams.definitions import CHANGES, EVENTS
from streams.permissions import permissions_for
from streams.presence import Editing, UserPresence, group_by_user
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
)
from streams.state import CHANNEL_OF, EntityKind, FieldError, Op, validate_fields
from streams.subjects import wedding_subject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# a batched message stops growing past this many bytes (frames are never split)
BATCH_BYTES = 64 * 1024

EVENT_NAMESPACE = uuid.UUID("5b0e3c1e-2f0a-4d7e-9a51-8c8f2a6e7d10")

_encode = msgspec.json.Encoder()


def _frame(obj: Any) -> str:
    return _encode.encode(obj).decode()


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
            log.warning("publishing works again after %.1fs (%d frames refused meanwhile)",
                        time.monotonic() - self.since, self.failures)  # fmt: skip
            self.since, self.failures = None, 0


_publish_outage = _Outage()


def _snapshot(hub: Hub, conn: Connection) -> list[UserPresence]:
    """The room's presence as this member may see it (its own record included)."""
    records = {r.connection_id: r for r in hub.presence_of(conn.wedding_id)}
    if conn.presence.record is not None:
        records[conn.presence.connection_id] = conn.presence.record
    return group_by_user(list(records.values()), conn.role)


@websocket("/ws/weddings/{wedding_id:uuid}")
async def wedding_socket(socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID) -> None:
    """Unexpected failures close with 4002 (reconnect and resume), never with Litestar's
    default 4500, which our protocol reserves for an invalid session (terminal)."""
    if not await admit_origin(socket):  # another site's page (cross-site WebSocket hijacking)
        return
    if not await admit_handshake(socket):  # per-IP handshake limit, before any query
        return
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
    settings: GatewaySettings = socket.app.state.settings.gateway
    conn = await admit(socket, conns, hub, wedding_id, socket.app.state.settings)
    if conn is None:
        return
    # from here on the socket is in its room (it has to leave it)
    writer = asyncio.create_task(_guarded(conn, "writer", _write(socket, conn, hub)))
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
        _spawn(tasks, conn, "session watch", session.watch(conns.pool, conn))
        after = socket.query_params.get("after_seq")
        if after is not None and after.isascii() and after.isdigit():  # not "²"
            epoch = socket.query_params.get("epoch")
            _spawn(tasks, conn, "resume", _resume(conns, hub, conn, int(after), epoch, True))
        else:
            conn.finish_replay()  # live from the welcome's last_seq on
        ttl = socket.app.state.settings.auth.session_ttl
        reader = asyncio.create_task(
            _guarded(conn, "reader", _read(socket, conns, hub, conn, tasks, settings, ttl))
        )
        closing = asyncio.ensure_future(conn.close_requested.wait())
        try:
            await asyncio.wait({reader, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
    except Exception:
        log.exception("websocket session failed")
        conn.request_close(Close.SERVER_ERROR, "internal error: reconnect and resume")
    finally:
        for t in (*tasks, *([reader] if reader else [])):
            t.cancel()
        try:
            await hub.leave(conn)
            try:
                await tracker.disconnect(conn.presence)
            except Exception as exc:  # NATS gone: the expiry worker removes the record
                log.warning("presence disconnect failed: %r", exc)
            conn.request_close(1000, "")
            # a writer stuck on a peer that does not read is abandoned (asyncio.wait: our
            # own cancellation propagates, the writer's outcome is its own)
            _, stuck = await asyncio.wait({writer}, timeout=2)
            if stuck:
                writer.cancel()
            if socket.connection_state != "disconnect":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        socket.close(conn.close_code, conn.close_reason[:120]), 2
                    )
        finally:
            writer.cancel()  # a no-op once it finished


async def _guarded(conn: Connection, what: str, coro: Coroutine[Any, Any, None]) -> None:
    """One of the socket's tasks. A failure is logged and closes the socket with 4002
    (reconnect and resume), never silently; cancellation is not a failure and propagates."""
    try:
        await coro
    except Exception:
        log.exception("websocket %s failed", what)
        conn.request_close(Close.SERVER_ERROR, "internal error: reconnect and resume")


def _spawn(
    tasks: set[asyncio.Task[None]], conn: Connection, what: str, coro: Coroutine[Any, Any, None]
) -> None:
    t = asyncio.create_task(_guarded(conn, what, coro))
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
    tasks: set[asyncio.Task[None]], settings: GatewaySettings, ttl: float,
) -> None:  # fmt: skip
    bucket = TokenBucket(settings.rate, settings.burst)
    tally = hub.tally
    while not conn.closed:
        try:
            raw = await socket.receive_data("text")
        except WebSocketDisconnect:
            return
        await session.use(conns.pool, conn, ttl)  # every frame is use; expired: 4500
        if conn.closed:
            return
        tally.frames_in += 1
        try:  # size in bytes, shape, and storable (streams/limits.py)
            frame = decode_client_frame(raw, settings.max_frame)
        except FrameRefused as refused:
            conn.send(_frame(ErrorFrame(
                code=refused.code, message=refused.message, id=refused.frame_id
            )))  # fmt: skip
            continue
        if isinstance(frame, PingFrame):
            conn.send(_frame(PongFrame()))
        elif isinstance(frame, PresenceFrame):
            if bucket.take():  # a presence frame costs what a message does
                await _presence(hub, conn, frame)
            else:
                _limited(conn, settings, None)
        elif isinstance(frame, ResumeFrame):  # charged by its size (app/gateway/limits.py)
            _spawn(tasks, conn, "resume", _resume(conns, hub, conn, frame.after_seq, frame.epoch))
        elif isinstance(frame, MessageFrame | ChangeFrame):
            if not bucket.take():
                _limited(conn, settings, frame.id)
                continue
            if (retry := hub.admission.refuse()) is not None:
                conn.send(_frame(ErrorFrame(
                    id=frame.id, code="overloaded", retry_after=retry,
                    message="server overloaded: not stored; resend the same frame later",
                )))  # fmt: skip
                continue
            # a trace starts at each frame that stores something: it follows the message
            # through JetStream into the workers (W3C traceparent in NATS headers)
            with span(
                tracer, "ws message" if isinstance(frame, MessageFrame) else "ws change",
                SpanKind.SERVER, {"wedsync.wedding_id": str(conn.wedding_id),
                                  "wedsync.frame_id": frame.id, "enduser.id": conn.user_id},
            ):  # fmt: skip
                if isinstance(frame, MessageFrame):
                    stored = await _publish(conns, hub, conn, frame)
                else:
                    parts = socket.app.state.settings.conflicts.partitions
                    stored = await _change(conns, hub, conn, frame, parts)
            tally.published += stored
            await hub.tracker.activity(conn.presence)


def _limited(conn: Connection, settings: GatewaySettings, frame_id: str | None) -> None:
    limit = f"over {settings.rate:g} frames per second"
    conn.send(_frame(ErrorFrame(id=frame_id, code="rate_limited", message=limit)))


async def _presence(hub: Hub, conn: Connection, frame: PresenceFrame) -> None:
    if isinstance(frame.editing, Editing) and (refused := _editing_refused(conn, frame.editing)):
        conn.send(_frame(refused))
        return
    fields = {k: v for k, v in msgspec.structs.asdict(frame).items() if v is not msgspec.UNSET}
    try:
        if fields:
            await hub.tracker.change(conn.presence, **fields)
        else:
            await hub.tracker.activity(conn.presence)
    except Exception as exc:
        log.warning("presence update failed: %r", exc)
        conn.send(_frame(ErrorFrame(code="unavailable", message="presence not updated; retry")))


def _editing_refused(conn: Connection, editing: Editing) -> ErrorFrame | None:
    """Editing names a field of a shared entity the member may read (others are told)."""
    try:
        kind = EntityKind(editing.entity)
    except ValueError:
        kinds = ", ".join(k.value for k in EntityKind)
        return ErrorFrame(code="invalid", message=f"editing.entity must be one of {kinds}")
    if CHANNEL_OF[kind] not in conn.readable:
        return ErrorFrame(code="forbidden", message=f"{conn.role.value} may not read {kind.value}")
    return None


async def _publish(conns: Connections, hub: Hub, conn: Connection, frame: MessageFrame) -> bool:
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
    return await _store(conns, hub, conn, frame.id, subject, EVENTS.name, _encode.encode(event))


async def _store(conns: Connections, hub: Hub, conn: Connection, frame_id: str, subject: str,
                 stream: str, payload: bytes) -> bool:  # fmt: skip
    """Publish, and ack the client only once JetStream has stored it (deduplicated by the
    session and frame id, so a frame re-sent after a reconnect is stored once)."""
    admission = hub.admission
    admission.inflight += 1
    try:
        headers = {"Nats-Msg-Id": f"{conn.session_id}:{frame_id}"}
        with producing(tracer, stream, subject, headers):
            ack = await conns.js.publish(subject, payload, stream=stream, headers=headers)
    except Exception as exc:  # not durable: the client must retry with the same id
        _publish_outage.failed(exc)
        conn.send(_frame(ErrorFrame(id=frame_id, code="unavailable",
                                    message="not stored; retry with the same id")))  # fmt: skip
        return False
    finally:
        admission.inflight -= 1
    _publish_outage.ok()
    conn.send(_frame(AckFrame(id=frame_id, seq=ack.seq)))
    return True


async def _change(
    conns: Connections, hub: Hub, conn: Connection, frame: ChangeFrame, partitions: int
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
    if conn.scope is not None:  # a vendor's records stay theirs (the worker checks the rest)
        refused = conn.scope.check_change(frame.entity, frame.op, frame.fields, fields)
        if refused:
            return refuse("forbidden", refused)
    if hub.contacts is not None:  # encrypted from here on: JetStream, the worker, PostgreSQL
        fields = hub.contacts.seal(frame.entity, fields)
    wedding = str(conn.wedding_id)
    change = ChangeRequest(
        client_id=frame.id, wedding_id=wedding, actor=Actor(user_id=conn.user_id, role=conn.role),
        entity=frame.entity, entity_id=frame.entity_id, op=frame.op, fields=fields,
        base_version=frame.base_version, ts=time.time(),
    )  # fmt: skip
    return await _store(conns, hub, conn, frame.id, change_subject(wedding, partitions),
                        CHANGES.name, _encode.encode(change))  # fmt: skip


async def _resume(
    conns: Connections,
    hub: Hub,
    conn: Connection,
    after_seq: int,
    epoch: str | None,
    on_connect: bool = False,
) -> None:
    """Replay what the client missed, then hand over to live events: no gap, no duplicate.

    A position from another epoch of the stream (it was recreated) means nothing here:
    nothing is replayed and ``recovered`` is false, so the client reloads state over HTTP.
    A replay that fails raises (the socket closes with 4002 and the client resumes again):
    the live events held meanwhile are never released without the ``resumed`` before them.
    """
    if conn.resuming:
        conn.send(_frame(ErrorFrame(code="invalid", message="a resume is already running")))
        return
    budget = hub.replays.start(conn.wedding_id, conn.user_id)
    if budget is None:
        if on_connect:  # it is not at the welcome's position: going live would be a gap
            conn.request_close(Close.TRY_LATER, "rate_limited: too many resumes, retry later")
        else:
            limit = f"over {hub.replays.rate:g} replayed events per second: resume later"
            conn.send(_frame(ErrorFrame(code="rate_limited", message=limit)))
        return
    conn.resuming = conn.replaying = True  # live events are held from here
    try:
        # what is stored now (the room's cached head may name a since-purged event);
        # anything newer is held while we replay
        upto = await last_seq(conns.js, conns.pool, conn.wedding_id)
        if (epoch is not None and not same_epoch(epoch, hub.epoch)) or after_seq > upto:
            recovered = False  # a position from a recreated stream: skip to now
        else:
            recovered = await fully_held(conns.js, conns.pool, conn.wedding_id, after_seq)
            conn.last_sent = after_seq
            async for seq, channel, data in events_between(
                conns.js, conns.pool, conn.wedding_id, after_seq, upto
            ):
                if channel == GUESTS and hub.contacts is not None:
                    data = hub.contacts.open_event_bytes(data)
                budget.spend(1)
                await conn.replayed(seq, channel, data)
        conn.last_sent = max(conn.last_sent, upto)
        done = ResumedFrame(after_seq=after_seq, last_seq=conn.last_sent, recovered=recovered,
                            epoch=hub.epoch)  # fmt: skip
        await conn.queue.put(_frame(done))
    finally:
        conn.resuming = False
    conn.finish_replay()  # held live events after the replayed ones, none twice
