"""Presence analytics: who was here, minute by minute, rolled into PostgreSQL.

Runs in ``wedsync worker presence`` from the same mirror of the presence bucket as the
expiry. Every ``WEDSYNC_PRESENCE_SAMPLE_EVERY`` seconds (default 30, so no minute is
skipped by timer drift) it marks the current minute for every member with a connected
device (present) and for those whose status is ``active`` or ``busy`` (active). Minutes
are bits ORed into a row, so sampling twice, restarting, or running two replicas never
counts a minute twice. While no presence worker runs, minutes are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from types import TracebackType

import asyncpg

from app.db import presence_minutes
from app.db.presence_minutes import Sample
from app.presence import PresenceTable
from streams.presence import Status

log = logging.getLogger(__name__)

_ACTIVE = (Status.ACTIVE, Status.BUSY)


def samples(table: PresenceTable) -> list[Sample]:
    """One sample per (wedding, user) with a connected device right now."""
    active: dict[tuple[str, str], bool] = {}
    for stored in table:
        r = stored.record
        if r.disconnected_at is not None:
            continue
        key = (r.wedding_id, r.user_id)
        active[key] = active.get(key, False) or r.status in _ACTIVE
    out = []
    for (wedding, user), is_active in active.items():
        try:
            out.append(Sample(uuid.UUID(wedding), user, is_active))
        except ValueError:
            continue
    return out


class PresenceAnalytics:
    """``async with PresenceAnalytics(table, pool, every) as a: await a.wait()``."""

    def __init__(self, table: PresenceTable, pool: asyncpg.Pool, every: float) -> None:
        self.table, self.pool, self.every = table, pool, every
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PresenceAnalytics:
        self._task = asyncio.create_task(self._loop(), name="presence-analytics")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def sample(self, at: dt.datetime | None = None) -> int:
        """Record the minute containing ``at`` (default now); the members counted."""
        taken = samples(self.table)
        async with self.pool.acquire() as conn:
            await presence_minutes.record(conn, at or dt.datetime.now(dt.UTC), taken)
        return len(taken)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("presence analytics sample failed")
            await asyncio.sleep(self.every)
