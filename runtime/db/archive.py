"""The event archive: a wedding's history that JetStream no longer holds.

Rows are the exact stored bytes of each event with its stream seq, so history and resume
serve archived events byte for byte as JetStream did. ``event_archive`` is partitioned by
the month JetStream stored the event in; partitions are created on first use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from runtime.db.types import Conn

# one partition creator at a time (CREATE ... IF NOT EXISTS races): taken by the SQL
# function wedsync_archive_partition (migration 0011), whose literal must stay equal
_PARTITION_LOCK = 0x57ED_A7C
_WEDDING_LOCK = 0x57EF  # pg_advisory_lock(class, wedding): archive job vs erase of one wedding


@contextlib.asynccontextmanager
async def wedding_lock(pool: asyncpg.Pool, wedding_id: uuid.UUID) -> AsyncIterator[None]:
    """Held while one wedding's events move between JetStream and the archive."""
    key = uuid.UUID(str(wedding_id)).int & 0x7FFF_FFFF
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", _WEDDING_LOCK, key)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", _WEDDING_LOCK, key)


@dataclass(frozen=True, slots=True)
class Archived:
    wedding_id: uuid.UUID
    seq: int
    channel: str
    stored_at: dt.datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class Marks:
    purged_upto: int  # every event of the wedding with seq <= this is archived
    last_seq: int  # the newest archived seq
    archived: int


def _month(at: dt.datetime) -> dt.date:
    return dt.date(at.year, at.month, 1)


def partition_name(month: dt.date) -> str:
    return f"event_archive_y{month.year:04d}m{month.month:02d}"


async def ensure_partitions(conn: Conn, stored: list[dt.datetime]) -> None:
    """Create the monthly partitions ``stored`` times fall in (UTC months)."""
    months = {_month(t.astimezone(dt.UTC)) for t in stored}
    have = {
        r["relname"]
        for r in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'event_archive'::regclass"
        )
    }
    missing = [m for m in sorted(months) if partition_name(m) not in have]
    if not missing:
        return
    for m in missing:
        # DDL as the owner: the runtime role may not (a SECURITY DEFINER function of
        # migration 0011, taking the _PARTITION_LOCK itself, naming it partition_name(m))
        await conn.execute("SELECT wedsync_archive_partition($1)", m)


async def insert(conn: Conn, rows: list[Archived]) -> int:
    """Store rows not yet archived; returns how many were new (a rerun inserts none)."""
    if not rows:
        return 0
    await ensure_partitions(conn, [r.stored_at for r in rows])
    status = await conn.execute(
        """INSERT INTO event_archive (wedding_id, seq, channel, stored_at, data)
           SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[],
                                $5::bytea[])
           ON CONFLICT DO NOTHING""",
        [r.wedding_id for r in rows],
        [r.seq for r in rows],
        [r.channel for r in rows],
        [r.stored_at for r in rows],
        [r.data for r in rows],
    )
    return int(status.rsplit(" ", 1)[1])


async def count_held(conn: Conn, wedding_id: uuid.UUID, seqs: list[int]) -> int:
    """How many of these seqs of the wedding the archive holds."""
    n = await conn.fetchval(
        "SELECT count(*) FROM event_archive WHERE wedding_id = $1 AND seq = ANY($2::bigint[])",
        wedding_id,
        seqs,
    )
    return int(n)


async def advance(
    conn: Conn, wedding_id: uuid.UUID, *, purged_upto: int, last_seq: int, moved: int
) -> None:
    await conn.execute(
        """INSERT INTO archive_marks (wedding_id, purged_upto, last_seq, archived)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (wedding_id) DO UPDATE
           SET purged_upto = greatest(archive_marks.purged_upto, EXCLUDED.purged_upto),
               last_seq = greatest(archive_marks.last_seq, EXCLUDED.last_seq),
               archived = archive_marks.archived + EXCLUDED.archived,
               updated_at = now()""",
        wedding_id,
        purged_upto,
        last_seq,
        moved,
    )


async def marks(conn: Conn, wedding_id: uuid.UUID) -> Marks:
    r = await conn.fetchrow(
        "SELECT purged_upto, last_seq, archived FROM archive_marks WHERE wedding_id = $1",
        wedding_id,
    )
    return Marks(0, 0, 0) if r is None else Marks(r["purged_upto"], r["last_seq"], r["archived"])


async def between(
    conn: Conn, wedding_id: uuid.UUID, after_seq: int, upto: int, limit: int
) -> list[tuple[int, str, bytes]]:
    """(seq, channel, data) of archived events with after_seq < seq <= upto, oldest first."""
    rows = await conn.fetch(
        """SELECT seq, channel, data FROM event_archive
           WHERE wedding_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4""",
        wedding_id,
        after_seq,
        upto,
        limit,
    )
    return [(r["seq"], r["channel"], bytes(r["data"])) for r in rows]
