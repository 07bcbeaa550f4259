"""``GET /api/me/export``: everything stored about the caller, as JSON."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import asyncpg
import msgspec

from app.auth import ContactCipher, GuestContacts, Identity
from app.documents.privacy import export as document_export
from app.privacy.erase import weddings_of
from runtime.connections import Connections
from runtime.eventlog import events_between, last_seq
from streams.api import PersonalExport
from streams.permissions import Channel
from streams.stored import placeholder, read_event


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        row = dict(r)
        for k, v in row.items():
            if hasattr(v, "exploded"):  # inet
                row[k] = str(v)
            elif isinstance(v, str) and k in ("data", "prefs", "details"):
                row[k] = msgspec.Raw(v.encode())  # jsonb text: always JSON, never re-encoded
        out.append(row)
    return out


def _authored(
    uid: str, seq: int, channel: str, data: bytes, contacts: GuestContacts
) -> dict[str, Any] | None:
    """The history item of an event ``uid`` authored (None: someone else's, or a server
    event). One that cannot be read back (streams/stored.py) is exported with its stored
    text as well; a guest contact they typed is exported opened."""
    event = read_event(data)
    if event is not None:
        if event.actor.user_id != uid or event.actor.server:
            return None
        if channel == Channel.GUESTS.value:
            data = contacts.open_event_bytes(data)
        return {"seq": seq, "event": msgspec.Raw(data)}
    head = placeholder(data, channel)
    actor = head["actor"] or {}
    if actor.get("user_id") != uid or actor.get("server"):
        return None
    stored = data.decode("utf-8", "replace")
    return {"seq": seq, "event": head, "unreadable": True, "stored": stored}


async def export(
    conns: Connections, cipher: ContactCipher, who: Identity, contacts: GuestContacts
) -> PersonalExport:
    uid = who.user_id
    async with conns.pool.acquire() as conn:
        members = await conn.fetch(
            """SELECT m.wedding_id, w.name AS wedding_name, m.role, m.display_name,
                      m.email_enc, m.phone_enc, m.added_by, m.added_at
               FROM wedding_members m JOIN weddings w ON w.id = m.wedding_id
               WHERE m.user_id = $1 ORDER BY m.added_at""",
            uid,
        )
        memberships = [
            {
                **{k: v for k, v in dict(r).items() if not k.endswith("_enc")},
                "email": cipher.open(r["email_enc"]),
                "phone": cipher.open(r["phone_enc"]),
            }
            for r in members
        ]
        sessions = _rows(
            await conn.fetch(
                """SELECT id, wedding_id, device_fingerprint, ip, user_agent, created_at,
                      last_seen_at, expires_at, ended_at, end_reason
               FROM sessions WHERE user_id = $1 ORDER BY created_at""",
                uid,
            )
        )
        notifications = _rows(
            await conn.fetch(
                """SELECT id, wedding_id, event_type, category, title, body, data, created_at,
                      read_at, acknowledged_at
               FROM notifications WHERE user_id = $1 ORDER BY created_at""",
                uid,
            )
        )
        preferences = _rows(
            await conn.fetch(
                "SELECT wedding_id, prefs, updated_at FROM notification_preferences "
                "WHERE user_id = $1",
                uid,
            )
        )
        push = _rows(
            await conn.fetch(
                "SELECT id, endpoint, created_at FROM push_subscriptions WHERE user_id = $1", uid
            )
        )
        presence = _rows(
            await conn.fetch(
                """SELECT wedding_id, day, bit_count(present) AS present_minutes,
                      bit_count(active) AS active_minutes
               FROM presence_minutes WHERE user_id = $1
               UNION ALL
               SELECT wedding_id, day, present_minutes, active_minutes
               FROM presence_days WHERE user_id = $1
               ORDER BY 1, 2""",
                uid,
            )
        )
        audit = _rows(
            await conn.fetch(
                "SELECT wedding_id, action, ip, at, details FROM audit_log WHERE actor = $1 "
                "ORDER BY id",
                uid,
            )
        )
        weddings = await weddings_of(conn, uid)
    events: list[dict[str, Any]] = []
    for wedding_id in weddings:
        head = await last_seq(conns.js, conns.pool, wedding_id)
        replay = events_between(conns.js, conns.pool, wedding_id, 0, head)
        async with contextlib.aclosing(replay):
            async for seq, channel, data in replay:
                if (item := _authored(uid, seq, channel, data, contacts)) is not None:
                    events.append({"wedding_id": wedding_id, **item})
    documents = await document_export(conns, uid)
    return PersonalExport(
        user_id=uid,
        exported_at=dt.datetime.now(dt.UTC),
        claims={"name": who.name, "email": who.email},
        memberships=memberships,
        sessions=sessions,
        events=events,
        notifications=notifications,
        preferences=preferences,
        push_subscriptions=push,
        presence=presence,
        audit=audit,
        documents=documents,
    )
