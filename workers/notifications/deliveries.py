"""The dispatcher's SQL: claiming due deliveries, their details, each attempt's log and
result, and the advisory locks that tell a live dispatcher's claims from a dead one's."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from runtime.db.types import Conn

LOCK_CLASS = 0x57ED  # pg_advisory_lock(class, owner): one owner id per live dispatcher

_CLAIM = """
WITH due AS (
    SELECT id FROM deliveries WHERE status = 'pending' AND due_at <= $1
    ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1, claimed_at = $1,
                        claimed_by = $3
FROM due WHERE d.id = due.id
RETURNING d.id"""

_DETAILS = """
SELECT d.id, d.key, d.channel, d.category, d.user_id, d.wedding_id, d.webhook_id, d.event_id,
       d.attempts, d.unless_read, d.digest, d.payload, d.reason, d.traceparent,
       n.id AS nid, n.title, n.body, n.data, n.read_at, n.event_type, n.event_seq,
       n.created_at AS n_created, m.email_enc, m.phone_enc, e.acknowledged_at AS acked,
       w.url, w.secret_enc, w.enabled
FROM deliveries d
LEFT JOIN notifications n ON n.id = d.notification_id
LEFT JOIN wedding_members m ON m.wedding_id = d.wedding_id AND m.user_id = d.user_id
LEFT JOIN escalations e ON e.event_id = d.event_id AND d.reason = 'escalation'
LEFT JOIN webhooks w ON w.id = d.webhook_id
WHERE d.id = ANY($1::bigint[]) ORDER BY d.id"""


async def lock(conn: Conn, owner: int) -> None:
    """Held for the dispatcher's whole life, on its own connection."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_CLASS, owner)


async def try_lock(conn: Conn, owner: int) -> bool:
    """Taken only if ``owner`` is dead (its lock is free)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, owner))


async def unlock(conn: Conn, owner: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, owner)


async def claim(conn: Conn, now: dt.datetime, limit: int, owner: int) -> list[int]:
    """Up to ``limit`` due deliveries, now ``sending`` (attempt + 1) under ``owner``."""
    return [r["id"] for r in await conn.fetch(_CLAIM, now, limit, owner)]


async def details(conn: Conn, ids: list[int]) -> list[asyncpg.Record]:
    """What sending each delivery needs: the notice, the receiver's contacts, the webhook."""
    return await conn.fetch(_DETAILS, ids)


async def other_claimants(conn: Conn, owner: int) -> list[int]:
    """Owners other than ``owner`` with deliveries in ``sending``."""
    rows = await conn.fetch(
        """SELECT DISTINCT claimed_by FROM deliveries
           WHERE status = 'sending' AND claimed_by <> $1""",
        owner,
    )
    return [r["claimed_by"] for r in rows]


async def release_claims(conn: Conn, owner: int, now: dt.datetime) -> list[asyncpg.Record]:
    """A dead owner's claims due again now (their ids and attempt counts)."""
    return await conn.fetch(
        """UPDATE deliveries SET status = 'pending', due_at = $2, claimed_by = NULL
           WHERE status = 'sending' AND claimed_by = $1
           RETURNING id, attempts""",
        owner,
        now,
    )


async def log_attempts(conn: Conn, entries: list[tuple[int, dt.datetime, str, str | None]]) -> None:
    """Append to each delivery's attempt log, numbered on their own (a replay restarts the
    retry count, never the log)."""
    await conn.executemany(
        """INSERT INTO delivery_attempts (delivery_id, attempt, at, result, error)
           SELECT $1, coalesce(max(attempt), 0) + 1, $2, $3, $4
           FROM delivery_attempts WHERE delivery_id = $1""",
        entries,
    )


async def attempts_logged(conn: Conn, delivery_id: int) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1", delivery_id
    )
    return n


async def sent(conn: Conn, ids: list[int], owner: int, at: dt.datetime, ref: str | None) -> None:
    await conn.execute(
        """UPDATE deliveries SET status = 'sent', sent_at = $2, provider_ref = $3,
                                 last_error = NULL
           WHERE id = ANY($1::bigint[]) AND claimed_by = $4""",
        ids,
        at,
        ref,
        owner,
    )


async def skipped(conn: Conn, ids: list[int], owner: int, reason: str | None) -> None:
    await conn.execute(
        """UPDATE deliveries SET status = 'skipped', reason = $2
           WHERE id = ANY($1::bigint[]) AND claimed_by = $3""",
        ids,
        reason,
        owner,
    )


async def retry_at(
    conn: Conn, ids: list[int], owner: int, due: dt.datetime, error: str | None
) -> None:
    await conn.execute(
        """UPDATE deliveries SET status = 'pending', due_at = $2, last_error = $3
           WHERE id = ANY($1::bigint[]) AND claimed_by = $4""",
        ids,
        due,
        error,
        owner,
    )


async def given_up(conn: Conn, ids: list[int], owner: int, status: str, error: str | None) -> None:
    """``dead`` (retries spent) or ``failed`` (the endpoint is disabled)."""
    await conn.execute(
        """UPDATE deliveries SET status = $2, last_error = $3
           WHERE id = ANY($1::bigint[]) AND claimed_by = $4""",
        ids,
        status,
        error,
        owner,
    )


async def disable_webhook(conn: Conn, webhook_id: uuid.UUID, at: dt.datetime, reason: str) -> None:
    await conn.execute(
        """UPDATE webhooks SET enabled = false, disabled_at = $2, disabled_reason = $3
           WHERE id = $1 AND enabled""",
        webhook_id,
        at,
        reason,
    )


async def push_subscriptions(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = $1", user_id
    )


async def forget_push_subscription(conn: Conn, subscription_id: uuid.UUID) -> None:
    """The push service said the subscription is gone (404/410)."""
    await conn.execute("DELETE FROM push_subscriptions WHERE id = $1", subscription_id)
