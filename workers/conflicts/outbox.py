"""The conflicts worker's transactional outbox: events exist only for committed changes.

A change's result events are written to ``event_outbox`` in the transaction that writes
the state (:func:`enqueue`), and a trigger's ``NOTIFY`` wakes the relay when it commits.
The :class:`OutboxRelay` publishes a partition's rows in id order, then deletes them and
records the wedding's stream position in one statement. So:

* no event is ever published for a change PostgreSQL did not commit (the rows do not
  exist until the commit; a rolled-back attempt leaves none);
* every committed event is published: the rows stay until a publish of each is
  confirmed, across crashes and outages of any length;
* none is published twice: a row whose publish may have happened (tried, not confirmed)
  is published again with the same ``Nats-Msg-Id``, which JetStream stores once within
  its duplicate window; a row first tried longer ago than (most of) the window is first
  looked up among the wedding's events stored after its last confirmed one.

One relay at a time per partition (a PostgreSQL advisory lock held on the relay's own
connection, released by PostgreSQL if the process or the connection dies), so a wedding's
events keep their order; a standby worker's relay takes over a partition it can lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime.db.types import Conn
from streams.definitions import EVENTS
from streams.protocol import Event
from streams.subjects import wedding_wildcard
from workers.outage import OUTAGES, Outages, is_infrastructure

log = logging.getLogger(__name__)

CHANNEL = "wedsync_outbox"  # NOTIFY payload: the partition with new rows
LOCK_SPACE = 0x0B0C  # pg_advisory_lock(LOCK_SPACE, partition): one relay per partition
BATCH = 200
#: A row first tried longer ago than this share of the stream's duplicate window is looked
#: up in the stream before it is published again (a margin for clocks and slow publishes).
WINDOW_SHARE = 0.5
#: Without a notification (one lost while the relay reconnected), look anyway this often.
SWEEP_EVERY = 2.0

_encode = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish after commit."""

    msg_id: str  # Nats-Msg-Id: deterministic per (change seq, index)
    subject: str
    event: Event
    headers: dict[str, str]


async def enqueue(
    conn: Conn, partition: int, wedding_id: uuid.UUID, events: Sequence[Outgoing]
) -> None:
    """Inside the change's transaction: the rows, and a wake-up delivered at commit."""
    if not events:
        return
    # written as tried: the relay publishes right after the commit, and a row whose publish
    # was never confirmed must be looked up in the stream once the duplicate window is past
    await conn.executemany(
        """INSERT INTO event_outbox (partition, wedding_id, subject, msg_id, payload, headers,
                                     first_try_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, now()) ON CONFLICT (msg_id) DO NOTHING""",
        [
            (
                partition,
                wedding_id,
                e.subject,
                e.msg_id,
                _encode.encode(e.event),
                json.dumps(e.headers),
            )
            for e in events
        ],
    )
    # the insert's trigger wakes the partition's relay at commit (migration 0008)


@dataclass(slots=True)
class _Row:
    id: int
    wedding_id: uuid.UUID
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str]
    tried_long_ago: bool


class OutboxRelay:
    """``async with OutboxRelay(js, pool, partitions) as r: await r.wait()``.

    One task per partition, each on a connection of its own (its advisory lock and its
    listener live and die with that connection), so partitions are relayed side by side."""

    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        partitions: Sequence[int],
        *,
        outages: Outages = OUTAGES,
    ) -> None:
        self.js, self.pool, self.partitions = js, pool, list(partitions)
        self.outages = outages
        self.published = 0
        self._stopping = asyncio.Event()
        self._wakes = {p: asyncio.Event() for p in self.partitions}
        self._tasks: list[asyncio.Task[None]] = []
        self._window = 120.0

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._run(p), name=f"outbox relay p{p}") for p in self.partitions
        ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        for wake in self._wakes.values():
            wake.set()
        await asyncio.gather(*self._tasks)

    async def wait(self) -> None:
        assert self._tasks, "not started: use `async with`"
        await asyncio.shield(asyncio.gather(*self._tasks))

    def _notified(self, conn: Conn, pid: int, channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            self._wakes[int(str(payload))].set()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self, partition: int) -> None:
        while not self._stopping.is_set():
            try:
                await self._session(partition)
            except Exception as exc:
                if not is_infrastructure(exc):
                    log.exception("outbox relay p%d failed; starting again", partition)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                    continue
                await self.outages.wait_out(
                    self.js, self.pool, self._stopping, detail=f"outbox relay: {exc!r}"
                )

    async def _session(self, partition: int) -> None:
        """One connection's life: take the partition's lock (or wait for it), then drain
        on every wake-up and every ``SWEEP_EVERY`` seconds."""
        info = await self.js.stream_info(EVENTS.name)
        self._window = float(info.config.duplicate_window or 120.0)
        wake = self._wakes[partition]
        async with self.pool.acquire() as conn:  # released: lock and listener go with it
            await conn.add_listener(CHANNEL, self._notified)
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", LOCK_SPACE, partition
            ):  # another process relays it: stand by
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), SWEEP_EVERY)
                if self._stopping.is_set():
                    return
            while not self._stopping.is_set():
                wake.clear()
                await self._drain(conn, partition)
                if wake.is_set():
                    continue  # notified while draining
                with contextlib.suppress(TimeoutError):  # a sweep: a lost notification
                    await asyncio.wait_for(wake.wait(), SWEEP_EVERY)
                if conn.is_closed():
                    raise ConnectionError("outbox relay connection closed")

    async def _drain(self, conn: Conn, partition: int) -> None:
        """Publish the partition's rows in order until none is left."""
        while not self._stopping.is_set():
            rows = await self._next(conn, partition)
            if not rows:
                return
            done: list[tuple[_Row, int]] = []
            try:
                known = await self._stored_already(conn, [r for r in rows if r.tried_long_ago])
                for r in rows:
                    seq = known.get(r.msg_id)
                    if seq is None:
                        headers = {**r.headers, "Nats-Msg-Id": r.msg_id}
                        ack = await self.js.publish(
                            r.subject, r.payload, stream=EVENTS.name, headers=headers
                        )
                        seq = ack.seq
                    done.append((r, seq))
            finally:
                if done:  # what is stored is confirmed, even if a later publish failed
                    await self._confirm(conn, done)
            self.published += len(done)

    async def _next(self, conn: Conn, partition: int) -> list[_Row]:
        records = await conn.fetch(
            """SELECT id, wedding_id, subject, msg_id, payload, headers::text AS headers,
                      first_try_at IS NULL AS untried,
                      first_try_at IS NOT NULL
                        AND now() - first_try_at > make_interval(secs => $3) AS long_ago
               FROM event_outbox WHERE partition = $1 ORDER BY id LIMIT $2""",
            partition,
            BATCH,
            self._window * WINDOW_SHARE,
        )
        rows = [
            _Row(
                r["id"],
                r["wedding_id"],
                r["subject"],
                r["msg_id"],
                bytes(r["payload"]),
                json.loads(r["headers"]),
                r["long_ago"],
            )
            for r in records
        ]
        untried = [r["id"] for r in records if r["untried"]]
        if untried:  # rows are written "tried" (enqueue): only rows of older versions
            # from here on a publish of these may have happened: say so before trying
            await conn.execute(
                "UPDATE event_outbox SET first_try_at = now() WHERE id = ANY($1::bigint[])",
                untried,
            )
        return rows

    async def _stored_already(self, conn: Conn, rows: list[_Row]) -> dict[str, int]:
        """Of rows tried long ago, those JetStream holds (msg id -> seq): looked up among
        each wedding's events after its last confirmed one (the only place they can be)."""
        found: dict[str, int] = {}
        by_wedding: dict[uuid.UUID, dict[bytes, str]] = {}
        for r in rows:
            by_wedding.setdefault(r.wedding_id, {})[r.payload] = r.msg_id
        for wedding_id, wanted in by_wedding.items():
            seq = await conn.fetchval(
                "SELECT seq FROM outbox_published WHERE wedding_id = $1", wedding_id
            )
            stale, before = len(wanted), len(found)
            async for at, data in self._events_after(wedding_id, int(seq or 0)):
                if (msg_id := wanted.pop(data, None)) is not None:
                    found[msg_id] = at
                    if not wanted:
                        break
            log.warning(
                "outbox: %d event(s) of wedding %s first tried over %.0fs ago (past the "
                "duplicate window's safe share): %d already stored, the rest published now",
                stale,
                wedding_id,
                self._window * WINDOW_SHARE,
                len(found) - before,
            )
        return found

    async def _events_after(
        self, wedding_id: uuid.UUID, seq: int
    ) -> AsyncIterator[tuple[int, bytes]]:
        subject = wedding_wildcard(wedding_id)
        while True:
            try:
                msg = await self.js.get_msg(EVENTS.name, seq=seq + 1, subject=subject, next=True)
            except NotFoundError:
                return
            seq = int(msg.seq or 0)
            yield seq, msg.data or b""

    async def _confirm(self, conn: Conn, done: list[tuple[_Row, int]]) -> None:
        heads: dict[uuid.UUID, int] = {}
        for r, seq in done:
            heads[r.wedding_id] = max(heads.get(r.wedding_id, 0), seq)
        weddings = sorted(heads)  # one lock order for every relay
        await conn.execute(  # one statement: one round trip, one transaction
            """WITH gone AS (DELETE FROM event_outbox WHERE id = ANY($1::bigint[]))
               INSERT INTO outbox_published (wedding_id, seq)
               SELECT * FROM unnest($2::uuid[], $3::bigint[])
               ON CONFLICT (wedding_id) DO UPDATE
               SET seq = greatest(outbox_published.seq, EXCLUDED.seq)""",
            [r.id for r, _ in done],
            weddings,
            [heads[w] for w in weddings],
        )
