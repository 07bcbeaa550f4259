"""The ``webhooks`` rows of a wedding (their deliveries are the notifications worker's:
runtime/db/notifications.py)."""

from __future__ import annotations

import uuid

import asyncpg

from runtime.db.notifications import WAKE
from runtime.db.types import Conn

_COLS = "id, url, events, enabled, disabled_reason, created_at"


async def create(
    conn: Conn,
    wedding_id: uuid.UUID,
    url: str,
    events: list[str],
    secret_enc: bytes | None,
    created_by: str,
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO webhooks (id, wedding_id, url, events, secret_enc, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLS}""",
        uuid.uuid4(),
        wedding_id,
        url,
        events,
        secret_enc,
        created_by,
    )
    assert row is not None
    return row


async def of_wedding(conn: Conn, wedding_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_COLS} FROM webhooks WHERE wedding_id = $1 ORDER BY created_at", wedding_id
    )


async def delete(conn: Conn, wedding_id: uuid.UUID, hook_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "DELETE FROM webhooks WHERE id = $1 AND wedding_id = $2 RETURNING true",
            hook_id,
            wedding_id,
        )
    )


async def url_of(conn: Conn, wedding_id: uuid.UUID, hook_id: uuid.UUID) -> str | None:
    url: str | None = await conn.fetchval(
        "SELECT url FROM webhooks WHERE id = $1 AND wedding_id = $2", hook_id, wedding_id
    )
    return url


async def enable(
    conn: Conn, wedding_id: uuid.UUID, hook_id: uuid.UUID, owner: str
) -> asyncpg.Record | None:
    """Enabled again, now owned by ``owner``: it acts with their authority, and stops with it."""
    return await conn.fetchrow(
        f"""UPDATE webhooks SET enabled = true, disabled_at = NULL,
                                disabled_reason = NULL, created_by = $3
            WHERE id = $1 AND wedding_id = $2 RETURNING {_COLS}""",
        hook_id,
        wedding_id,
        owner,
    )


async def is_enabled(conn: Conn, wedding_id: uuid.UUID, hook_id: uuid.UUID) -> bool | None:
    """None: no such webhook in the wedding."""
    enabled: bool | None = await conn.fetchval(
        "SELECT enabled FROM webhooks WHERE id = $1 AND wedding_id = $2", hook_id, wedding_id
    )
    return enabled


async def replay(conn: Conn, hook_id: uuid.UUID) -> int:
    """Failed and dead deliveries of the webhook due again now; the dispatcher is woken."""
    count = await conn.fetchval(
        """WITH again AS (
               UPDATE deliveries SET status = 'pending', attempts = 0, due_at = now(),
                                     claimed_by = NULL, reason = 'replayed'
               WHERE webhook_id = $1 AND status IN ('failed', 'dead') RETURNING 1)
           SELECT count(*) FROM again""",
        hook_id,
    )
    await conn.execute(f"NOTIFY {WAKE}")
    return int(count)
