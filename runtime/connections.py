"""The long-lived connections of one process: NATS, JetStream and the PostgreSQL pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from config.settings import Settings
from runtime.db import migrate, scope
from runtime.presence.table import presence_bucket
from streams import ensure_streams

log = logging.getLogger(__name__)
T = TypeVar("T")
POOL_CLOSE_TIMEOUT = 5.0
_PG_UNREACHABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # starting up, shutting down
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
)


@dataclass(frozen=True, slots=True)
class Connections:
    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    #: called (each as a task) whenever the NATS connection is re-established: what a
    #: server restart took away (ordered consumers' server side) can be put back at once
    on_reconnect: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


def _require(settings: Settings) -> tuple[str, str]:
    if settings.nats.url is None or settings.database.url is None:
        raise RuntimeError(
            "WEDSYNC_NATS_URL and WEDSYNC_DATABASE_URL must be set "
            "(or use `wedsync dev`, which starts embedded servers)"
        )
    return settings.nats.url, settings.database.url


async def _until_reachable(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` until it connects: a service that is not there yet (or restarting)
    when a process starts is waited for, with one log line, not a crash."""
    delay, warned_at = 0.25, 0.0
    while True:
        try:
            return await attempt()
        except (OSError, TimeoutError, nats.errors.Error, *_PG_UNREACHABLE) as exc:
            now = time.monotonic()
            if now - warned_at > 30:  # once, then a reminder every 30 s
                log.warning("%s not reachable yet (%r); waiting for it", what, exc)
                warned_at = now
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@contextlib.asynccontextmanager
async def connect(settings: Settings, *, name: str = "wedsync") -> AsyncIterator[Connections]:
    """Open NATS and the pool (waiting for either if it is not up yet); on exit drain NATS
    (flushing pending publishes) and close."""
    nats_url, db_url = _require(settings)
    hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def reconnected() -> None:
        log.warning("NATS connection re-established")
        for hook in list(hooks):
            task = asyncio.create_task(hook())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    nc = await _until_reachable(
        "NATS",
        lambda: nats.connect(
            servers=nats_url.split(","),
            name=name,
            connect_timeout=settings.nats.connect_timeout,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            reconnected_cb=reconnected,
        ),
    )
    try:
        pool = await _until_reachable(
            "PostgreSQL",
            lambda: asyncpg.create_pool(
                db_url,
                min_size=settings.database.pool_min,
                max_size=settings.database.pool_max,
                setup=scope.on_acquire,  # the task's wedding scope (runtime/db/scope.py)
            ),
        )
        try:
            yield Connections(nc=nc, js=nc.jetstream(), pool=pool, on_reconnect=hooks)
        finally:
            await _close_pool(pool)
    finally:
        try:
            if nc.is_connected:
                await nc.drain()
            else:
                await nc.close()
        except Exception as exc:  # the server went away first: nothing left to flush
            log.warning("NATS connection did not close cleanly: %r", exc)


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool, waiting a bounded time for borrowed connections to come back: a
    stopping process must stop even if a task still holds one (asyncpg's ``close`` waits
    for every release, however long)."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning(
            "PostgreSQL connections still in use after %.0f s at shutdown: closing them",
            POOL_CLOSE_TIMEOUT,
        )
        pool.terminate()


async def prepare(conns: Connections, settings: Settings) -> None:
    """Bring the database schema and the JetStream streams up to the declared state.

    Migrations run as the owner role (``WEDSYNC_MIGRATE_DATABASE_URL``) on a connection of
    their own: the pool's runtime role may not run DDL."""
    owner_url = settings.database.migrate_url
    if owner_url is None or owner_url == settings.database.url:
        async with conns.pool.acquire() as conn:
            await migrate(conn)
    else:
        owner = await _until_reachable(
            "PostgreSQL (owner role)", lambda: asyncpg.connect(owner_url)
        )
        try:
            await migrate(owner)
        finally:
            await owner.close()
    await ensure_streams(
        conns.js, replicas=settings.nats.replicas, duplicate_window=settings.nats.duplicate_window
    )
    await presence_bucket(conns.js, replicas=settings.nats.replicas)
