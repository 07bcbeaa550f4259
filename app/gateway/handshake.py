"""Opening a socket: its session token, the member behind it, and a second look once the
socket is in its room.

The token comes, in this order, from the ``Sec-WebSocket-Protocol`` header (subprotocols
``wedsync.v1`` and ``wedsync.token.<token>``; the answer is ``wedsync.v1``), from the
legacy ``?token=`` query parameter (``WEDSYNC_WS_QUERY_TOKEN``; the access log never shows
a query string), or from a first ``auth`` frame sent within ``WEDSYNC_WS_AUTH_TIMEOUT``.

A removal, role change or status change committed while a handshake runs must not be
missed: its control message reaches only sockets already in a room. So the socket joins
its room first and then reads its session and membership again (one statement, which
also extends the session: opening is use). A control message arriving during that read
is at least as new as what the read returns, and wins.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from app.gateway.connection import Connection
from app.gateway.hub import Hub
from app.gateway.session import EXPIRED
from app.gateway.tracker import Presence
from app.sessions import store as session_store
from app.weddings import store as wedding_store
from config.settings import GatewaySettings, Settings
from runtime.connections import Connections
from streams.permissions import Role, WeddingStatus
from streams.protocol import SUBPROTOCOL, TOKEN_PREFIX, AuthFrame, Close

INVALID = "unknown, expired or ended session"
FORBIDDEN = "this session may not open this wedding"
NO_TOKEN = 'no session token: send {"type": "auth", "token": ...} first'
NO_QUERY_TOKEN = "a token in the URL is refused: send an auth frame or use the subprotocol"

_decode_auth = msgspec.json.Decoder(AuthFrame)


async def admit(
    socket: WebSocket[Any, Any, Any],
    conns: Connections,
    hub: Hub,
    wedding_id: uuid.UUID,
    settings: Settings,
) -> Connection | None:
    """Accept the socket and authenticate it. The connection returned is in its room (the
    caller leaves it); None: the socket was refused and closed with the documented code."""
    token = await _token(socket, settings.gateway)
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
        if m is None or m.status == WeddingStatus.CANCELLED:
            await socket.close(Close.FORBIDDEN, FORBIDDEN)
            return None
    user_id: str = session["user_id"]
    presence = Presence(str(wedding_id), str(session["id"]), user_id, m.role, m.display_name)
    conn = Connection(
        wedding_id=wedding_id,
        session_id=session["id"],
        user_id=user_id,
        role=m.role,
        status=m.status,
        queue_size=settings.gateway.queue,
        presence=presence,
        batch=socket.query_params.get("batch") == "1",
    )
    if not await hub.join(conn):  # the room's live subscription exists from here on
        await socket.close(Close.TRY_LATER, "too many open connections for this user")
        return None
    try:
        admitted = await _recheck(conns, conn, settings.auth.session_ttl)
    except BaseException:
        await hub.leave(conn)
        raise
    if not admitted:
        await hub.leave(conn)
        await socket.close(conn.close_code, conn.close_reason)
        return None
    return conn


async def _token(socket: WebSocket[Any, Any, Any], settings: GatewaySettings) -> str | None:
    """Accept the socket and find its token; None: refused (the socket is closed)."""
    offered: list[str] = list(socket.scope.get("subprotocols") or ())
    token = next((p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)), "")
    # never the token's subprotocol: a browser accepts any one it offered
    await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if token:
        return token
    legacy: str | None = socket.query_params.get("token")
    if legacy:
        if settings.query_token:
            return legacy
        await socket.close(Close.INVALID_SESSION, NO_QUERY_TOKEN)
        return None
    try:
        raw = await asyncio.wait_for(socket.receive_data("text"), settings.auth_timeout)
    except TimeoutError:
        await socket.close(Close.AUTH_TIMEOUT, f"no auth frame within {settings.auth_timeout:g} s")
        return None
    except WebSocketDisconnect:
        return None
    try:
        token = _decode_auth.decode(raw).token
    except (msgspec.DecodeError, msgspec.ValidationError):
        await socket.close(Close.INVALID_SESSION, NO_TOKEN)
        return None
    return token


async def _recheck(conns: Connections, conn: Connection, ttl: float) -> bool:
    """The socket is in its room: its session and membership as they are now. False: it is
    refused (``conn.close_code`` says how)."""
    changes = conn.changes
    async with conns.pool.acquire() as db:
        row = await session_store.recheck(db, conn.session_id, extend_by=ttl)
    if conn.closed:  # a control message (removed, session ended, cancelled) meanwhile
        return False
    if row is None:
        conn.request_close(Close.INVALID_SESSION, EXPIRED)
        return False
    if row["role"] is None or row["status"] == WeddingStatus.CANCELLED.value:
        conn.request_close(Close.FORBIDDEN, FORBIDDEN)
        return False
    conn.expires_at, conn.touched_at = row["expires_at"].timestamp(), time.monotonic()
    if conn.changes == changes:  # else a newer role or status came by control meanwhile
        conn.set_access(Role(row["role"]), WeddingStatus(row["status"]))
        conn.presence.role, conn.presence.display_name = conn.role, row["display_name"]
    return True
