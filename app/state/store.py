"""The state a wedding's HTTP API reads: the entities, the budget approvals, and the two
waits that make a read consistent with the events a client has seen (docs/conflicts.md)."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import msgspec

from runtime.db.types import Conn

#: How long ``/state`` waits for a wedding's committed events still in the outbox to be
#: published (a few ms normally; while NATS is away it answers anyway, after this).
OUTBOX_WAIT = 2.0


async def published(conn: Conn, wedding_id: uuid.UUID) -> None:
    """Wait (a little) until the wedding's committed changes have their events published.
    Not needed for correctness (folding skips an event already in the snapshot) but it
    spares a client a deleted entity coming back for a moment from a later event."""
    deadline = time.monotonic() + OUTBOX_WAIT
    delay = 0.005
    while time.monotonic() < deadline and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM event_outbox WHERE wedding_id = $1)", wedding_id
    ):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def settled(conn: Conn, wedding_id: uuid.UUID) -> None:
    """Within a transaction: wait until no worker is applying a change of the wedding, and
    keep it so until commit. The worker holds the wedding's state row FOR UPDATE from
    before it reads until it commits, and events are published only after the commit
    (the outbox), so every event stored so far is reflected in what this transaction
    reads, and no change commits meanwhile (docs/conflicts.md)."""
    await conn.execute(
        "INSERT INTO wedding_state (wedding_id) VALUES ($1) ON CONFLICT DO NOTHING", wedding_id
    )
    await conn.execute("SELECT 1 FROM wedding_state WHERE wedding_id = $1 FOR SHARE", wedding_id)


async def entities(
    conn: Conn, wedding_id: uuid.UUID, kinds: list[str], scoped: dict[str, str], user_id: str
) -> list[asyncpg.Record]:
    """The live entities of ``kinds``; of a kind in ``scoped`` (kind -> field), only the rows
    whose field names ``user_id`` (record-level scope, streams/scope.py)."""
    return await conn.fetch(
        """SELECT kind, entity_id, version, fields::text AS fields FROM entities
           WHERE wedding_id = $1 AND NOT deleted AND kind = ANY($2::text[])
             AND (NOT $3::jsonb ? kind OR fields ->> ($3::jsonb ->> kind) = $4)""",
        wedding_id,
        kinds,
        msgspec.json.encode(scoped).decode(),
        user_id,
    )


async def approvals(conn: Conn, wedding_id: uuid.UUID) -> list[asyncpg.Record]:
    """The newest 200 budget approvals, pending first."""
    return await conn.fetch(
        """SELECT * FROM approvals WHERE wedding_id = $1
           ORDER BY status <> 'pending', requested_at DESC LIMIT 200""",
        wedding_id,
    )


async def approval_status(conn: Conn, wedding_id: uuid.UUID, approval_id: uuid.UUID) -> str | None:
    status: str | None = await conn.fetchval(
        "SELECT status FROM approvals WHERE id = $1 AND wedding_id = $2", approval_id, wedding_id
    )
    return status
