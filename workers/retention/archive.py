"""The archive job: events past a wedding's hot retention move from JetStream to the
PostgreSQL archive, a batch at a time, without loss or duplicates at any crash point.

Per batch (under the wedding's lock, so an erase never interleaves):

1. read the wedding's oldest held events in stream order, up to the batch size, stopping at
   the first one still hot (or not yet processed by a worker consuming the stream);
2. in one transaction insert them (``ON CONFLICT DO NOTHING``: a rerun after a crash finds
   them there), check the archive now holds every one, and advance the wedding's marks;
3. purge the wedding's messages below the first one kept, and check the purge removed
   exactly the batch: rows archived == messages removed.

A crash before 2 commits leaves everything in JetStream; between 2 and 3 the rerun inserts
nothing and purges the batch. Nothing is removed from JetStream that is not committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from config.settings import RetentionSettings
from runtime.db import archive
from runtime.db.archive import Archived, wedding_lock
from runtime.eventlog import first_held
from streams.definitions import EVENTS
from streams.subjects import wedding_wildcard
from workers.retention.jobs import (
    Clock,
    Counts,
    InvariantError,
    Progress,
    purge,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    rows: list[Archived]
    keep_from: int  # the wedding's first seq that stays in JetStream
    held_back: bool = False  # stopped at an expired event a consumer has yet to process


def cutoff(
    settings: RetentionSettings,
    now: dt.datetime,
    hot_days: int | None,
    completed_at: dt.datetime | None,
) -> dt.datetime:
    """Events stored before this instant are archived."""
    if completed_at is not None and now >= completed_at + dt.timedelta(
        days=settings.after_completed_days
    ):
        return now  # completed long enough ago: all of it
    return now - dt.timedelta(days=hot_days or settings.hot_days)


class ArchiveJob:
    name = "archive"

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        settings: RetentionSettings,
        *,
        consumers: tuple[str, ...] = (),
        clock: Clock = utcnow,
        only: Collection[uuid.UUID] | None = None,
    ) -> None:
        self.nc, self.js, self.pool = nc, js, pool
        self.settings = settings
        self.consumers = consumers  # durables of WEDSYNC_EVENTS: nothing they still need goes
        self.clock = clock
        self.only = None if only is None else list(only)  # these weddings (None: every one)
        self.held_back: set[uuid.UUID] = set()  # weddings a lagging consumer kept in JetStream

    async def run(self, progress: Progress) -> Counts:
        now = self.clock()
        async with self.pool.acquire() as conn:
            weddings = await conn.fetch(
                "SELECT id, hot_days, completed_at FROM weddings "
                "WHERE $1::uuid[] IS NULL OR id = ANY($1::uuid[]) ORDER BY id",
                self.only,
            )
        progress.total(len(weddings), "weddings")
        floor = await self._consumed_floor()
        counts: Counts = {"weddings": 0, "archived": 0, "purged": 0}
        self.held_back.clear()
        for w in weddings:
            until = cutoff(self.settings, now, w["hot_days"], w["completed_at"])
            archived, purged = await self.wedding(w["id"], until, floor)
            counts["weddings"] += 1 if purged else 0
            counts["archived"] += archived
            counts["purged"] += purged
            progress.advance(1, archived=archived, purged=purged)
        counts["held_back"] = len(self.held_back)
        if self.held_back:
            log.warning(
                "archive: %d weddings have expired events a consumer of %s (%s) has not "
                "processed yet; they stay in JetStream until it catches up",
                len(self.held_back),
                EVENTS.name,
                ", ".join(self.consumers),
            )
        return counts

    async def wedding(
        self, wedding_id: uuid.UUID, until: dt.datetime, floor: int | None = None
    ) -> tuple[int, int]:
        """Archive the wedding's events stored before ``until``: (rows new, messages purged)."""
        archived = purged = 0
        while True:
            async with wedding_lock(self.pool, wedding_id):
                batch = await self._read(wedding_id, until, floor)
                if batch.held_back:
                    self.held_back.add(wedding_id)
                if not batch.rows:
                    return archived, purged
                async with self.pool.acquire() as conn, conn.transaction():
                    new = await archive.insert(conn, batch.rows)
                    seqs = [r.seq for r in batch.rows]
                    held = await archive.count_held(conn, wedding_id, seqs)
                    if held != len(seqs):
                        raise InvariantError(
                            f"wedding {wedding_id}: archive holds {held} of {len(seqs)} events"
                        )
                    await archive.advance(
                        conn,
                        wedding_id,
                        purged_upto=batch.keep_from - 1,
                        last_seq=seqs[-1],
                        moved=new,
                    )
                removed = await purge(
                    self.nc,
                    EVENTS.name,
                    below=batch.keep_from,
                    subject=wedding_wildcard(wedding_id),
                )
                if removed != len(seqs):
                    raise InvariantError(
                        f"wedding {wedding_id}: archived {len(seqs)} events but JetStream "
                        f"removed {removed} below seq {batch.keep_from}"
                    )
                archived += new
                purged += removed
                if len(batch.rows) < self.settings.archive_batch:
                    return archived, purged

    async def _read(self, wedding_id: uuid.UUID, until: dt.datetime, floor: int | None) -> Batch:
        start = await first_held(self.js, wedding_id, 1)
        if start is None:
            return Batch([], 0)
        sub = await self.js.subscribe(
            wedding_wildcard(wedding_id),
            stream=EVENTS.name,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        rows: list[Archived] = []
        try:
            while len(rows) < self.settings.archive_batch:
                try:
                    msg = await sub.next_msg(timeout=5)
                except NatsTimeoutError:
                    break
                md = msg.metadata
                seq = md.sequence.stream
                if md.timestamp >= until:
                    return Batch(rows, seq)  # still hot
                if floor is not None and seq > floor:
                    return Batch(rows, seq, held_back=True)  # a worker has yet to see it
                rows.append(
                    Archived(wedding_id, seq, msg.subject.rsplit(".", 1)[1], md.timestamp, msg.data)
                )
                if md.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return Batch(rows, rows[-1].seq + 1 if rows else 0)

    async def _consumed_floor(self) -> int | None:
        """The lowest stream seq a durable consumer of the events has yet to finish."""
        floor: int | None = None
        for durable in self.consumers:
            try:
                info = await self.js.consumer_info(EVENTS.name, durable)
            except NotFoundError:
                continue
            if not info.num_pending and not info.num_ack_pending:
                continue  # caught up
            done = info.ack_floor.stream_seq if info.ack_floor else 0
            floor = done if floor is None else min(floor, done)
        return floor
