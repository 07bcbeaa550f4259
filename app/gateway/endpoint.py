"""``/ws/weddings/{wedding_id}``: the WebSocket edge of a wedding room, and a socket's life
in it (admitted, welcomed, read and written until it closes, then out of its room).

Its inbound frames are app/gateway/frames.py; resuming is app/gateway/resume.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from app.auth import admit_handshake
from app.cors import admit_origin
from app.gateway import session
from app.gateway.connection import Connection, frame_text
from app.gateway.context import SERVER_ERROR, SocketContext, guarded
from app.gateway.frames import read
from app.gateway.handshake import admit
from app.gateway.hub import Hub
from app.gateway.resume import resume
from app.services import Services
from streams.permissions import permissions_for
from streams.presence import UserPresence, group_by_user
from streams.protocol import Close, WelcomeFrame

log = logging.getLogger(__name__)

# a batched message stops growing past this many bytes (frames are never split)
BATCH_BYTES = 64 * 1024


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
                await socket.close(Close.SERVER_ERROR, SERVER_ERROR)


async def _serve(socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID) -> None:
    services = Services.of(socket.app.state)
    conns, hub, settings = services.connections(), services.gateway(), services.settings
    conn = await admit(socket, conns, hub, wedding_id, settings)
    if conn is None:
        return
    # from here on the socket is in its room (it has to leave it)
    ctx = SocketContext(socket, conns, hub, conn, settings)
    hub = ctx.hub
    writer = asyncio.create_task(guarded(conn, "writer", _write(socket, conn, hub)))
    reader: asyncio.Task[None] | None = None
    expiry: session.Expiry | None = None
    tracker = hub.tracker
    try:
        await tracker.connect(conn.presence)
        head = hub.head(wedding_id)
        conn.last_sent = head
        conn.send(
            frame_text(
                WelcomeFrame(
                    session_id=str(conn.session_id),
                    user_id=conn.user_id,
                    role=conn.role,
                    permissions=permissions_for(conn.role, conn.status),
                    last_seq=head,
                    epoch=hub.epoch,
                    presence=_snapshot(hub, conn),
                )
            )
        )
        conn.welcome_sent()
        expiry = session.Expiry(ctx.conns.pool, conn, ctx.spawn)
        expiry.start()
        after = socket.query_params.get("after_seq")
        if after is not None and after.isascii() and after.isdigit():  # not "²"
            epoch = socket.query_params.get("epoch")
            ctx.spawn("resume", resume(ctx, int(after), epoch, True))
        else:
            conn.finish_replay()  # live from the welcome's last_seq on
        reader = asyncio.create_task(guarded(conn, "reader", read(ctx)))
        conn.on_close = reader.cancel  # a close requested stops reading (no task waits for it)
        if conn.closed:  # requested before it started
            reader.cancel()
        await asyncio.wait({reader})
    except Exception:
        log.exception("websocket session failed")
        conn.request_close(Close.SERVER_ERROR, SERVER_ERROR)
    finally:
        if expiry is not None:
            expiry.stop()
        for t in (*ctx.tasks, *([reader] if reader else [])):
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
