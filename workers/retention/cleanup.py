"""The cleanup job: what is kept only for a while is deleted (or rolled up) when its time
is up. Each step is one statement or one transaction, so a rerun after a crash simply
finishes the work: nothing is counted twice or deleted before it is rolled up."""

from __future__ import annotations

import datetime as dt

import asyncpg
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from config.settings import RetentionSettings
from streams.definitions import DEAD_LETTERS
from streams.subjects import DEAD_LETTER_ROOT
from workers.retention.jobs import Clock, Counts, Progress, purge, utcnow

#: a redelivery comes within the ack wait (seconds to minutes): a week is ample
CONSUMED_KEEP = dt.timedelta(days=7)

_ROLL_UP = """
WITH old AS (
    DELETE FROM presence_minutes WHERE day < $1
    RETURNING wedding_id, user_id, day, bit_count(present) AS p, bit_count(active) AS a
)
INSERT INTO presence_days (wedding_id, user_id, day, present_minutes, active_minutes)
SELECT wedding_id, user_id, day, p, a FROM old
ON CONFLICT (wedding_id, day, user_id) DO UPDATE
SET present_minutes = greatest(presence_days.present_minutes, EXCLUDED.present_minutes),
    active_minutes = greatest(presence_days.active_minutes, EXCLUDED.active_minutes)
"""


def _n(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


class CleanupJob:
    name = "cleanup"

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        settings: RetentionSettings,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.nc, self.js, self.pool = nc, js, pool
        self.settings = settings
        self.clock = clock

    async def run(self, progress: Progress) -> Counts:
        now = self.clock()
        s = self.settings
        progress.total(5, "steps")
        counts: Counts = {}
        async with self.pool.acquire() as conn:
            counts["sessions"] = _n(
                await conn.execute(
                    """DELETE FROM sessions
                       WHERE least(expires_at, coalesce(ended_at, expires_at)) < $1""",
                    now - dt.timedelta(days=s.session_grace_days),
                )
            )
            progress.advance(sessions=counts["sessions"])
            # the day is the wedding's local day: a UTC date a day earlier is safely past
            oldest = (now - dt.timedelta(days=s.presence_detail_days + 1)).date()
            counts["presence_days"] = _n(await conn.execute(_ROLL_UP, oldest))
            progress.advance(presence_days=counts["presence_days"])
            counts["deliveries"] = _n(
                await conn.execute(
                    "DELETE FROM deliveries WHERE status IN ('sent', 'dead', 'skipped') "
                    "AND coalesce(sent_at, due_at, created_at) < $1",
                    now - dt.timedelta(days=s.delivery_log_days),
                )
            )
            progress.advance(deliveries=counts["deliveries"])
            counts["consumed_marks"] = _n(
                await conn.execute(
                    "DELETE FROM worker_consumed WHERE consumed_at < $1", now - CONSUMED_KEEP
                )
            )
            progress.advance(consumed_marks=counts["consumed_marks"])
        dlq_before = now - dt.timedelta(days=s.dead_letter_days)
        counts["dead_letters"] = await self._dead_letters(dlq_before)
        progress.advance(dead_letters=counts["dead_letters"])
        return counts

    async def _dead_letters(self, before: dt.datetime) -> int:
        """Purge dead letters stored before ``before`` (the stream is in time order)."""
        info = await self.js.stream_info(DEAD_LETTERS.name)
        if not info.state.messages:
            return 0
        sub = await self.js.subscribe(
            f"{DEAD_LETTER_ROOT}.>",
            stream=DEAD_LETTERS.name,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=before
            ),
        )
        try:
            keep_from = (await sub.next_msg(timeout=2)).metadata.sequence.stream
        except NatsTimeoutError:
            keep_from = info.state.last_seq + 1  # every one is older
        finally:
            await sub.unsubscribe()
        return await purge(self.nc, DEAD_LETTERS.name, below=keep_from)
