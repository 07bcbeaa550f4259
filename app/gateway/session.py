"""An open socket's session: extended by use, closed when it expires.

A session lives ``WEDSYNC_SESSION_TTL`` seconds after its last use. A socket uses it by
opening (app/gateway/handshake.py) and by every frame it sends; a socket extends it at
most every :func:`touch_every` seconds, not per frame. While its session is known to be
valid for longer than that (and the few seconds a flush may take), the extension is
queued, and the process's :class:`Extender` extends every queued session in one UPDATE a
second (an UPDATE, an acquire and a release per socket and minute were 7 % of a gateway
holding 10 000 sockets, and most of PostgreSQL's CPU). Closer to (or past) its known
expiry a frame waits for the database to say whether the session still lives. A socket
that sends nothing does not extend it: when the session expires the socket is closed with
4500, as a frame after the expiry would be (never acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from app.gateway.connection import Connection
from app.sessions import store as session_store
from runtime import tasks
from runtime.db import scope as db_scope
from streams.protocol import Close

MAX_TOUCH_EVERY = 60.0
RETRY_TOUCH = 5.0  # seconds before a failed extension is tried again
EXPIRED = "session expired or ended: join again"
EXTENDING = "gateway: extend the sessions of this process's own sockets (by id, one statement)"
log = logging.getLogger(__name__)


def touch_every(ttl: float) -> float:
    """Seconds between two extensions by one socket (a quarter of a short TTL)."""
    return min(MAX_TOUCH_EVERY, ttl / 4)


async def use(pool: asyncpg.Pool, extender: Extender, conn: Connection, ttl: float) -> None:
    """The client sent a frame. Extends the session when it is due (queued for the
    ``extender`` while it is known to be valid for longer than a touch interval; else, and
    when it seems to have expired, the database decides now); closes the socket with 4500
    if it is over.

    PostgreSQL away does not close a socket whose session is known to be valid still (an
    outage must not cut off chat, which needs only NATS): the extension is tried again in
    a few seconds. Past the known expiry a database failure propagates (4002)."""
    now = time.monotonic()
    every = touch_every(ttl)
    if now - conn.touched_at < every and time.time() < conn.expires_at:
        return
    conn.touched_at = now
    if conn.expires_at - time.time() > every + extender.margin:  # queued: lands before it
        extender.queue(conn)
        return
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


class Extender(tasks.Background):
    """``async with Extender(pool, ttl)``: the sessions queued by :func:`use` extended in one
    statement every :attr:`every` seconds (system scope: the ids are those of this
    process's own authenticated sockets, never client input; docs/security.md). A session
    the database no longer has live closes its sockets with 4500; a failure (PostgreSQL
    away) tries them again after ``RETRY_TOUCH`` seconds, as a socket's own extension did."""

    name = "session extender"

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self.pool, self.ttl = pool, ttl
        self.every = min(1.0, touch_every(ttl) / 2)
        # how long a queued extension may take to land: the wait for the next flush and
        # that flush's wait for a connection
        self.margin = self.every + RETRY_TOUCH
        self._due: dict[uuid.UUID, set[Connection]] = {}  # at most one entry per socket
        self.statements = 0

    def queue(self, conn: Connection) -> None:
        self._due.setdefault(conn.session_id, set()).add(conn)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.flush()

    async def flush(self) -> None:
        if not self._due:
            return
        due, self._due = self._due, {}
        try:
            with db_scope.system(EXTENDING):
                async with self.pool.acquire(timeout=RETRY_TOUCH) as db:
                    live = await session_store.touch_many(db, list(due), extend_by=self.ttl)
        except Exception as exc:
            log.debug("%d sessions not extended (%r): retried later", len(due), exc)
            retry_at = time.monotonic() - touch_every(self.ttl) + RETRY_TOUCH
            for conns in due.values():
                for conn in conns:
                    conn.touched_at = retry_at
            return
        self.statements += 1
        for session_id, conns in due.items():
            expires = live.get(session_id)
            for conn in conns:
                if expires is None:
                    conn.request_close(Close.INVALID_SESSION, EXPIRED)
                else:
                    conn.expires_at = max(conn.expires_at, expires.timestamp())


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
