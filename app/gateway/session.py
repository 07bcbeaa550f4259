"""An open socket's session: extended by use, closed when it expires.

A session lives ``WEDSYNC_SESSION_TTL`` seconds after its last use. A socket uses it by
opening (app/gateway/handshake.py) and by every frame it sends; extending costs one
UPDATE, so a socket does it at most every :func:`touch_every` seconds, not per frame. A
socket that sends nothing does not extend it: when the session expires the socket is
closed with 4500, as a frame after the expiry would be (never acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from app.gateway.connection import Connection
from app.sessions import store as session_store
from streams.protocol import Close

MAX_TOUCH_EVERY = 60.0
RETRY_TOUCH = 5.0  # seconds before a failed extension is tried again
EXPIRED = "session expired or ended: join again"
log = logging.getLogger(__name__)


def touch_every(ttl: float) -> float:
    """Seconds between two extensions by one socket (a quarter of a short TTL)."""
    return min(MAX_TOUCH_EVERY, ttl / 4)


async def use(pool: asyncpg.Pool, conn: Connection, ttl: float) -> None:
    """The client sent a frame. Extends the session when it is due (or when it seems to
    have expired: the database decides); closes the socket with 4500 if it is over.

    PostgreSQL away does not close a socket whose session is known to be valid still (an
    outage must not cut off chat, which needs only NATS): the extension is tried again in
    a few seconds. Past the known expiry a database failure propagates (4002)."""
    now = time.monotonic()
    every = touch_every(ttl)
    if now - conn.touched_at < every and time.time() < conn.expires_at:
        return
    conn.touched_at = now
    try:
        async with pool.acquire(timeout=RETRY_TOUCH) as db:
            expires = await session_store.touch(db, conn.session_id, extend_by=ttl)
    except Exception as exc:
        if time.time() >= conn.expires_at:
            raise
        log.debug("session %s not extended (%r): retried later", conn.session_id, exc)
        conn.touched_at = now - every + RETRY_TOUCH
        return
    if expires is None:
        conn.request_close(Close.INVALID_SESSION, EXPIRED)
    else:
        conn.expires_at = expires.timestamp()


class Expiry:
    """Closes a socket when its session expires: one timer per socket, not a task (an idle
    socket should cost almost nothing). At the expiry the database is asked whether the
    session was extended meanwhile (another socket, ``GET /api/collaboration/join``); the
    question runs as one of the socket's tasks (``spawn``), so a failure closes with 4002."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        conn: Connection,
        spawn: Callable[[str, Coroutine[Any, Any, None]], None],
    ) -> None:
        self.pool, self.conn, self._spawn = pool, conn, spawn
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        delay = max(self.conn.expires_at - time.time(), 0.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        if self.conn.closed:
            return
        if time.time() < self.conn.expires_at:
            self.start()  # extended by this socket's own use meanwhile
        else:
            self._spawn("session check", self._ask())

    async def _ask(self) -> None:
        async with self.pool.acquire() as db:
            expires = await session_store.expiry(db, self.conn.session_id)
        if expires is None:
            self.conn.request_close(Close.INVALID_SESSION, EXPIRED)
            return
        # this host's clock and the database's may differ a little: no tight loop
        self.conn.expires_at = max(expires.timestamp(), time.time() + 1.0)
        if not self.conn.closed:
            self.start()
