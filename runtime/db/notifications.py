"""SQL behind the notifications API: the inbox, preferences, push subscriptions, the log."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import asyncpg
import msgspec

from runtime.db.types import Conn
from streams.notifications import (
    Category,
    DeliveryAttempt,
    DeliveryLog,
    Medium,
    Notification,
    Preferences,
)

WAKE = "wedsync_deliveries"  # the dispatcher LISTENs: replayed deliveries are due now

_NOTE = """id, wedding_id, category, title, body, event_id, event_type, event_seq, data,
           created_at, read_at, acknowledged_at"""


def _note(r: asyncpg.Record) -> Notification:
    return Notification(
        id=r["id"],
        wedding_id=r["wedding_id"],
        category=Category(r["category"]),
        title=r["title"],
        body=r["body"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        event_seq=r["event_seq"],
        data=json.loads(r["data"]),
        created_at=r["created_at"],
        read_at=r["read_at"],
        acknowledged_at=r["acknowledged_at"],
    )


async def inbox(
    conn: Conn, user_id: str, wedding_id: uuid.UUID | None, offset: int, limit: int
) -> tuple[list[Notification], int]:
    """Unread first, newest first within each; and how many are unread."""
    rows = await conn.fetch(
        f"""SELECT {_NOTE} FROM notifications
            WHERE user_id = $1 AND ($2::uuid IS NULL OR wedding_id = $2)
            ORDER BY (read_at IS NULL) DESC, created_at DESC, id
            OFFSET $3 LIMIT $4""",
        user_id,
        wedding_id,
        offset,
        limit,
    )
    unread = await conn.fetchval(
        """SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL
           AND ($2::uuid IS NULL OR wedding_id = $2)""",
        user_id,
        wedding_id,
    )
    return [_note(r) for r in rows], int(unread)


async def mark_read(conn: Conn, user_id: str, nid: uuid.UUID, at: dt.datetime) -> bool:
    done = await conn.fetchval(
        """UPDATE notifications SET read_at = coalesce(read_at, $3)
           WHERE id = $1 AND user_id = $2 RETURNING true""",
        nid,
        user_id,
        at,
    )
    return bool(done)


async def acknowledge(
    conn: Conn, user_id: str, nid: uuid.UUID, at: dt.datetime
) -> Notification | None:
    """Read and acknowledge; an emergency's escalation stops for everyone."""
    row = await conn.fetchrow(
        f"""UPDATE notifications SET read_at = coalesce(read_at, $3),
                                     acknowledged_at = coalesce(acknowledged_at, $3)
            WHERE id = $1 AND user_id = $2 RETURNING {_NOTE}""",
        nid,
        user_id,
        at,
    )
    if row is None:
        return None
    if row["category"] == Category.EMERGENCY:
        await conn.execute(
            """UPDATE escalations SET acknowledged_at = $2, acknowledged_by = $3
               WHERE event_id = $1 AND acknowledged_at IS NULL""",
            row["event_id"],
            at,
            user_id,
        )
    return _note(row)


async def preferences(conn: Conn, wedding_id: uuid.UUID, user_id: str) -> Preferences:
    raw = await conn.fetchval(
        "SELECT prefs FROM notification_preferences WHERE wedding_id = $1 AND user_id = $2",
        wedding_id,
        user_id,
    )
    return Preferences() if raw is None else msgspec.json.decode(raw, type=Preferences)


async def save_preferences(
    conn: Conn, wedding_id: uuid.UUID, user_id: str, prefs: Preferences
) -> None:
    await conn.execute(
        """INSERT INTO notification_preferences (wedding_id, user_id, prefs)
           VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (wedding_id, user_id) DO UPDATE SET prefs = $3::jsonb, updated_at = now()""",
        wedding_id,
        user_id,
        msgspec.json.encode(prefs).decode(),
    )


async def add_push_subscription(
    conn: Conn, user_id: str, endpoint: str, p256dh: str, auth: str
) -> asyncpg.Record:
    """One row per (user, browser endpoint): registering again updates the caller's own
    keys; an endpoint someone else registered is never moved to the caller (that would
    let anyone who learns an endpoint take over its notifications)."""
    row = await conn.fetchrow(
        """INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, endpoint) DO UPDATE SET p256dh = $4, auth = $5
           RETURNING id, endpoint, created_at""",
        uuid.uuid4(),
        user_id,
        endpoint,
        p256dh,
        auth,
    )
    assert row is not None
    out: asyncpg.Record = row
    return out


async def delete_push_subscription(conn: Conn, user_id: str, sid: uuid.UUID) -> bool:
    done = await conn.fetchval(
        "DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2 RETURNING true",
        sid,
        user_id,
    )
    return bool(done)


async def deliveries(
    conn: Conn, wedding_id: uuid.UUID, before: int | None, limit: int
) -> list[DeliveryLog]:
    rows = await conn.fetch(
        """SELECT d.id, d.channel, d.category, d.user_id, d.webhook_id, d.event_id, d.status,
                  d.reason, d.created_at, d.due_at, d.sent_at,
                  coalesce(jsonb_agg(jsonb_build_object(
                      'attempt', a.attempt, 'at', a.at, 'result', a.result, 'error', a.error)
                      ORDER BY a.attempt) FILTER (WHERE a.attempt IS NOT NULL), '[]') AS attempts
           FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
           WHERE d.wedding_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
           GROUP BY d.id ORDER BY d.id DESC LIMIT $3""",
        wedding_id,
        before,
        limit,
    )
    return [
        DeliveryLog(
            id=r["id"],
            channel=Medium(r["channel"]),
            category=r["category"],
            user_id=r["user_id"],
            webhook_id=r["webhook_id"],
            event_id=r["event_id"],
            status=r["status"],
            reason=r["reason"],
            attempts=msgspec.json.decode(r["attempts"], type=list[DeliveryAttempt]),
            created_at=r["created_at"],
            due_at=r["due_at"],
            sent_at=r["sent_at"],
        )
        for r in rows
    ]


async def disable_webhooks_of(
    conn: Conn, wedding_id: uuid.UUID, user_id: str, reason: str
) -> list[uuid.UUID]:
    """Disable the enabled webhooks ``user_id`` registered (or re-enabled) in the wedding:
    a webhook acts with its owner's authority, so it stops when they lose it."""
    rows = await conn.fetch(
        """UPDATE webhooks SET enabled = false, disabled_at = now(), disabled_reason = $3
           WHERE wedding_id = $1 AND created_by = $2 AND enabled RETURNING id""",
        wedding_id,
        user_id,
        reason,
    )
    return [r["id"] for r in rows]
