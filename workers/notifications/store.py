"""The notifications worker's SQL: the wedding as the rules see it, the outbox, the log."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from config.telemetry import traceparent
from runtime.db.notifications import WAKE
from runtime.db.types import Conn
from streams.notifications import Category, Medium, Preferences
from streams.permissions import Role
from workers.notifications.rules import CATERING, Member, WeddingContext

_prefs = msgspec.json.Decoder(Preferences)


@dataclass(frozen=True, slots=True)
class Wedding:
    timezone: str
    status: str
    context: WeddingContext


async def wedding(conn: Conn, wedding_id: uuid.UUID) -> Wedding | None:
    row = await conn.fetchrow("SELECT timezone, status FROM weddings WHERE id = $1", wedding_id)
    if row is None:
        return None
    members = {
        r["user_id"]: Member(r["user_id"], Role(r["role"]), r["display_name"])
        for r in await conn.fetch(
            "SELECT user_id, role, display_name FROM wedding_members WHERE wedding_id = $1",
            wedding_id,
        )
    }
    vendors = await conn.fetch(
        """SELECT entity_id, fields->>'member' AS member, lower(fields->>'category') AS category
           FROM entities WHERE wedding_id = $1 AND kind = 'vendors' AND NOT deleted
             AND fields ? 'member'""",
        wedding_id,
    )
    links = {r["entity_id"]: r["member"] for r in vendors if r["member"]}
    caterers = frozenset(r["member"] for r in vendors if r["member"] and r["category"] in CATERING)
    return Wedding(row["timezone"], row["status"], WeddingContext(members, links, caterers))


async def preferences(
    conn: Conn, wedding_id: uuid.UUID, users: list[str]
) -> dict[str, Preferences]:
    rows = await conn.fetch(
        """SELECT user_id, prefs FROM notification_preferences
           WHERE wedding_id = $1 AND user_id = ANY($2::text[])""",
        wedding_id,
        users,
    )
    return {r["user_id"]: _prefs.decode(r["prefs"]) for r in rows}


async def webhooks_for(conn: Conn, wedding_id: uuid.UUID) -> list[asyncpg.Record]:
    sql = "SELECT id, events FROM webhooks WHERE wedding_id = $1 AND enabled"
    return list(await conn.fetch(sql, wedding_id))


async def add_notification(
    conn: Conn,
    *,
    id: uuid.UUID,
    wedding_id: uuid.UUID,
    user_id: str,
    event_id: str,
    event_seq: int,
    event_type: str,
    category: Category,
    title: str,
    body: str,
    data: dict[str, Any],
    at: dt.datetime,
) -> None:
    await conn.execute(
        """INSERT INTO notifications (id, wedding_id, user_id, event_id, event_seq, event_type,
                                      category, title, body, data, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)
           ON CONFLICT (event_id, user_id) DO NOTHING""",
        id,
        wedding_id,
        user_id,
        event_id,
        event_seq,
        event_type,
        category.value,
        title,
        body,
        json.dumps(data),
        at,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A delivery to queue: (event, recipient or endpoint, channel), once per key."""

    key: str
    wedding_id: uuid.UUID
    channel: Medium
    category: str  # a notice category, or "webhook"
    due_at: dt.datetime
    event_id: str | None = None
    notification_id: uuid.UUID | None = None
    user_id: str | None = None
    webhook_id: uuid.UUID | None = None
    reason: str | None = None
    unless_read: bool = False
    digest: bool = False
    payload: dict[str, Any] | None = None


async def queue(conn: Conn, items: list[Outgoing], now: dt.datetime) -> None:
    """Queue deliveries (once per key), carrying the current trace for their sends."""
    if not items:
        return
    trace = traceparent()
    await conn.executemany(
        """INSERT INTO deliveries (key, wedding_id, notification_id, event_id, user_id,
                                   webhook_id, channel, category, reason, unless_read, digest,
                                   payload, due_at, created_at, traceparent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15)
           ON CONFLICT (key) DO NOTHING""",
        [
            (
                o.key,
                o.wedding_id,
                o.notification_id,
                o.event_id,
                o.user_id,
                o.webhook_id,
                o.channel.value,
                o.category,
                o.reason,
                o.unless_read,
                o.digest,
                json.dumps(o.payload or {}),
                o.due_at,
                now,
                trace,
            )
            for o in items
        ],
    )
    await conn.execute(f"NOTIFY {WAKE}")


async def start_escalation(
    conn: Conn, event_id: str, wedding_id: uuid.UUID, next_at: dt.datetime
) -> None:
    await conn.execute(
        """INSERT INTO escalations (event_id, wedding_id, next_at) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING""",
        event_id,
        wedding_id,
        next_at,
    )
