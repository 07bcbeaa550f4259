"""The long-lived connections of one process: NATS, JetStream and the PostgreSQL pool."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from app.db import migrate
from app.presence.table import presence_bucket
from config.settings import Settings
from streams import ensure_streams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connections:
    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool


def _require(settings: Settings) -> tuple[str, str]:
    if settings.nats.url is None or settings.database.url is None:
        raise RuntimeError(
            "WEDSYNC_NATS_URL and WEDSYNC_DATABASE_URL must be set "
            "(or use `wedsync dev`, which starts embedded servers)"
        )
    return settings.nats.url, settings.database.url


@contextlib.asynccontextmanager
async def connect(settings: Settings, *, name: str = "wedsync") -> AsyncIterator[Connections]:
    """Open NATS and the pool; on exit drain NATS (flushing pending publishes) and close."""
    nats_url, db_url = _require(settings)
    nc = await nats.connect(
        servers=nats_url.split(","),
        name=name,
        connect_timeout=settings.nats.connect_timeout,
        max_reconnect_attempts=-1,
    )
    try:
        pool = await asyncpg.create_pool(
            db_url, min_size=settings.database.pool_min, max_size=settings.database.pool_max
        )
        try:
            yield Connections(nc=nc, js=nc.jetstream(), pool=pool)
        finally:
            await pool.close()
    finally:
        try:
            if nc.is_connected:
                await nc.drain()
            else:
                await nc.close()
        except Exception as exc:  # the server went away first: nothing left to flush
            log.warning("NATS connection did not close cleanly: %r", exc)


async def prepare(conns: Connections, settings: Settings) -> None:
    """Bring the database schema and the JetStream streams up to the declared state."""
    async with conns.pool.acquire() as conn:
        await migrate(conn)
    await ensure_streams(
        conns.js, replicas=settings.nats.replicas, duplicate_window=settings.nats.duplicate_window
    )
    await presence_bucket(conns.js, replicas=settings.nats.replicas)
