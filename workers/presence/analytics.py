"""Presence analytics: who was here, minute by minute, rolled into PostgreSQL.

Runs in ``wedsync worker presence`` from the same mirror of the presence bucket as the
expiry. Every ``WEDSYNC_PRESENCE_SAMPLE_EVERY`` seconds (default 30, so no minute is
skipped by timer drift) it marks the current minute for every member with a connected
device (present) and for those whose status is ``active`` or ``busy`` (active). Minutes
are bits ORed into a row, so sampling twice, restarting, or running two replicas never
counts a minute twice. While no presence worker runs, minutes are not counted.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import asyncpg

from runtime.db import presence_minutes
from runtime.db.presence_minutes import Sample
from runtime.presence import PresenceTable
from streams.presence import Status
from workers.periodic import Periodic

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


class PresenceAnalytics(Periodic):
    """``async with PresenceAnalytics(table, pool, every) as a: await a.wait()``."""

    def __init__(self, table: PresenceTable, pool: asyncpg.Pool, every: float) -> None:
        self.table, self.pool, self.every = table, pool, every
        self.name = "presence analytics"

    async def tick(self) -> int:
        return await self.sample()

    async def sample(self, at: dt.datetime | None = None) -> int:
        """Record the minute containing ``at`` (default now); the members counted."""
        taken = samples(self.table)
        async with self.pool.acquire() as conn:
            await presence_minutes.record(conn, at or dt.datetime.now(dt.UTC), taken)
        return len(taken)
