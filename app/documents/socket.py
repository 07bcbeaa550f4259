"""``/ws/weddings/{wedding_id}/documents/{name}``: one live document over y-protocols, as a
stock ``y-websocket`` ``WebsocketProvider`` speaks it (it appends the room name to its
server URL: the server URL is ``ws://HOST/ws/weddings/<id>/documents``, the room the
document's name).

Authenticated as the wedding socket is (docs/protocol.md): the session token in the
``Sec-WebSocket-Protocol`` header (``wedsync.v1``, ``wedsync.token.<token>``: the
provider's ``protocols`` option) or, where allowed, ``?token=`` (its ``params``). A binary
protocol has no auth frame: a socket without a token is closed with 4500 at once.

On open the server sends its sync step 1 and the awareness of the room; a client's step 1
is answered with step 2, the difference from its state vector (so a client back from
offline gets exactly what it missed). A client's step 2 and updates are stored in JetStream
and applied, here and in every process, from there (app/documents/rooms.py); a member who
may only read has them ignored. Awareness is relayed, rate limited, never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from pycrdt import Doc, create_sync_message, write_message

from app.auth import admit_handshake
from app.cors import admit_origin
from app.documents.rooms import DocRoom, DocSocket, DocumentHub
from app.documents.sync import (
    EMPTY_UPDATE,
    MESSAGE_AWARENESS,
    MESSAGE_QUERY_AWARENESS,
    MESSAGE_SYNC,
    STEP1,
    STEP2,
    ProtocolError,
    parse,
    read_awareness,
)
from app.gateway.admission import Admission
from app.gateway.handshake import FORBIDDEN, INVALID, NO_QUERY_TOKEN
from app.gateway.limits import TokenBucket
from app.gateway.session import EXPIRED, touch_every
from app.services import Services
from app.sessions import store as session_store
from app.weddings import store as wedding_store
from config.settings import Settings
from runtime.connections import Connections
from runtime.documents import store
from streams.documents import valid_name
from streams.permissions import Role, WeddingStatus
from streams.protocol import SUBPROTOCOL, TOKEN_PREFIX, Close

log = logging.getLogger(__name__)

#: largest y-protocols message a client may send (a step 2 after a long offline edit is
#: the big one); the stream stores messages up to 1 MiB
MAX_MESSAGE = 900 * 1024
NO_TOKEN = "no session token: offer the subprotocol wedsync.token.<token>"
NO_DOCUMENT = "no such document, or this member may not open it"
INVALID_MESSAGE = 1007  # RFC 6455: data inconsistent with the message type
TOO_BIG = 1009


@websocket("/ws/weddings/{wedding_id:uuid}/documents/{name:str}")
async def document_socket(
    socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID, name: str
) -> None:
    if not await admit_origin(socket):
        return
    if not await admit_handshake(socket):
        return
    try:
        await _serve(socket, wedding_id, name)
    except Exception:
        log.exception("document socket failed")
        if socket.connection_state != "disconnect":
            with contextlib.suppress(Exception):
                await socket.close(Close.SERVER_ERROR, "internal error: reconnect")


async def _token(socket: WebSocket[Any, Any, Any], settings: Settings) -> str | None:
    offered: list[str] = list(socket.scope.get("subprotocols") or ())
    token = next((p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)), "")
    await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if token:
        return token
    legacy: str | None = socket.query_params.get("token")
    if legacy and settings.gateway.query_token:
        return legacy
    await socket.close(Close.INVALID_SESSION, NO_QUERY_TOKEN if legacy else NO_TOKEN)
    return None


async def _admit(
    socket: WebSocket[Any, Any, Any],
    conns: Connections,
    settings: Settings,
    wedding_id: uuid.UUID,
    name: str,
) -> tuple[DocSocket, store.DocumentRow] | None:
    token = await _token(socket, settings)
    if token is None:
        return None
    async with conns.pool.acquire() as db:
        session = await session_store.by_token(db, token)
        if session is None:
            await socket.close(Close.INVALID_SESSION, INVALID)
            return None
        m = None
        if session["wedding_id"] == wedding_id:
            m = await wedding_store.membership(db, wedding_id, session["user_id"])
        if m is None or m.status is WeddingStatus.CANCELLED:
            await socket.close(Close.FORBIDDEN, FORBIDDEN)
            return None
        doc = await store.by_name(db, wedding_id, name) if valid_name(name) else None
    sock = DocSocket(
        session_id=session["id"],
        user_id=session["user_id"],
        role=m.role,
        status=m.status,
        name=name,
        queue_size=settings.gateway.queue,
    )
    readable, sock.writable = sock.access(doc.shared) if doc is not None else (False, False)
    if doc is None or not readable:
        # one answer for "none" and "not yours": a private document's existence is private
        await socket.close(Close.FORBIDDEN, NO_DOCUMENT)
        return None
    return sock, doc


async def _serve(socket: WebSocket[Any, Any, Any], wedding_id: uuid.UUID, name: str) -> None:
    services = Services.of(socket.app.state)
    settings, conns = services.settings, services.connections()
    hub = services.document_rooms()
    admitted = await _admit(socket, conns, settings, wedding_id, name)
    if admitted is None:
        return
    sock, row = admitted
    if not hub.admit(wedding_id, sock.user_id):
        await socket.close(Close.TRY_LATER, "too many open document sockets for this user")
        return
    try:
        room = await hub.join(sock, row)
    except BaseException:
        hub.release(wedding_id, sock.user_id)
        raise
    try:
        await _recheck(conns, sock, room, settings.auth.session_ttl)
    except BaseException:
        hub.release(wedding_id, sock.user_id)
        await hub.leave(sock, room)
        raise
    if sock.closed:
        hub.release(wedding_id, sock.user_id)
        await hub.leave(sock, room)
        await socket.close(sock.close_code, sock.close_reason[:120])
        return
    writer = asyncio.create_task(_write(socket, sock))
    reader = asyncio.create_task(_read(socket, sock, room, hub, conns, settings, services))
    try:
        sock.send(create_sync_message(room.doc))  # our step 1: the client sends what we lack
        aware = room.awareness_snapshot(sock)
        if aware is not None:
            sock.send(aware)
        closing = asyncio.ensure_future(sock.close_requested.wait())
        try:
            await asyncio.wait({reader, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if reader.done() and not reader.cancelled() and (exc := reader.exception()) is not None:
            log.error("document socket reader failed: %r", exc, exc_info=exc)
            sock.request_close(Close.SERVER_ERROR, "internal error: reconnect")
    finally:
        reader.cancel()
        hub.release(wedding_id, sock.user_id)
        await hub.leave(sock, room)
        sock.request_close(1000, "")
        _, stuck = await asyncio.wait({writer}, timeout=2)
        for t in stuck:
            t.cancel()
        if socket.connection_state != "disconnect":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(sock.close_code, sock.close_reason[:120]), 2)


async def _recheck(conns: Connections, sock: DocSocket, room: DocRoom, ttl: float) -> None:
    """In its room (whose control subscription now reaches it), the socket reads its
    session, membership and the document again, as the wedding socket does
    (app/gateway/handshake.py): a removal or unsharing committed while it opened is not
    missed. Opening is use: the session is extended."""
    async with conns.pool.acquire() as db:
        row = await session_store.recheck(db, sock.session_id, extend_by=ttl)
        doc = await store.by_id(db, room.id)
    if row is None:
        sock.request_close(Close.INVALID_SESSION, EXPIRED)
        return
    if row["role"] is None or row["status"] == WeddingStatus.CANCELLED.value or doc is None:
        sock.request_close(Close.FORBIDDEN, FORBIDDEN if doc is not None else NO_DOCUMENT)
        return
    sock.role, sock.status = Role(row["role"]), WeddingStatus(row["status"])
    readable, sock.writable = sock.access(doc.shared)
    if not readable:
        sock.request_close(Close.FORBIDDEN, NO_DOCUMENT)


async def _write(socket: WebSocket[Any, Any, Any], sock: DocSocket) -> None:
    try:
        while not sock.closed:
            message = await sock.queue.get()
            if sock.closed:
                return
            await socket.send_bytes(message)
    except (WebSocketDisconnect, RuntimeError, OSError):
        sock.request_close(1000, "")


async def _read(
    socket: WebSocket[Any, Any, Any],
    sock: DocSocket,
    room: DocRoom,
    hub: DocumentHub,
    conns: Connections,
    settings: Settings,
    services: Services,
) -> None:
    g = settings.gateway
    # updates wait for their token (a Yjs update is never dropped: the reader slows down);
    # awareness beyond the rate is dropped (the next one carries the whole state again)
    updates, awareness = TokenBucket(g.rate, g.burst), TokenBucket(g.rate, g.burst)
    ttl = settings.auth.session_ttl
    touched = time.monotonic()
    admission: Admission = services.gateway().admission  # the process's, shared
    while not sock.closed:
        try:
            data = await socket.receive_data("binary")
        except WebSocketDisconnect:
            sock.request_close(1000, "")
            return
        if len(data) > MAX_MESSAGE:
            sock.request_close(TOO_BIG, f"message over {MAX_MESSAGE} bytes")
            return
        if time.monotonic() - touched > touch_every(ttl):
            touched = time.monotonic()
            async with conns.pool.acquire() as db:
                if await session_store.touch(db, sock.session_id, extend_by=ttl) is None:
                    sock.request_close(Close.INVALID_SESSION, EXPIRED)
                    return
        try:
            await _handle(data, sock, room, hub, updates, awareness, admission)
        except ProtocolError as exc:
            sock.request_close(INVALID_MESSAGE, f"not y-protocols: {exc}")
            return


async def _handle(
    data: bytes,
    sock: DocSocket,
    room: DocRoom,
    hub: DocumentHub,
    updates: TokenBucket,
    awareness: TokenBucket,
    admission: Admission,
) -> None:
    m = parse(data)
    if m.kind == MESSAGE_SYNC:
        if m.step == STEP1:
            try:
                diff = room.doc.get_update(m.payload)
            except Exception:
                raise ProtocolError("invalid state vector") from None
            sock.send(bytes((MESSAGE_SYNC, STEP2)) + write_message(diff))
            return
        if not sock.writable or m.payload == EMPTY_UPDATE:
            return  # a reader's edits are not stored (its editor should be read-only)
        try:
            Doc().apply_update(m.payload)  # decodes it: an invalid update is never stored
        except Exception:
            raise ProtocolError("invalid update") from None
        if not updates.take():  # backpressure: wait for the token, then spend it
            await asyncio.sleep(max(1.0 - updates.tokens, 0.0) / max(updates.rate, 1e-3))
            updates.spend(1.0)
        # an overloaded process (app/gateway/admission.py) stops reading rather than
        # refusing: y-protocols has no error reply, and a dropped update is lost
        while (retry := admission.refuse()) is not None:  # noqa: ASYNC110 (polled: no event)
            await asyncio.sleep(retry)
        admission.inflight += 1
        try:
            await hub.publish_update(room, sock, m.payload)
        finally:
            admission.inflight -= 1
    elif m.kind == MESSAGE_AWARENESS:
        read_awareness(m.payload)  # validated before it reaches anyone
        if awareness.take():
            await hub.publish_awareness(room, sock, m.payload)
    elif m.kind == MESSAGE_QUERY_AWARENESS:
        aware = room.awareness_snapshot(sock)
        if aware is not None:
            sock.send(aware)
