"""``DELETE /api/me``: erase one person's personal data everywhere it lives.

What goes: their memberships (display name, encrypted contacts), sessions (IPs, device
fingerprints, user agents), notifications, preferences, push subscriptions, presence
records and analytics, and the IP of every audit entry they caused. Then every place that
holds free text is searched for their identifiers (names, email addresses, phone numbers,
IPs, fingerprints) and those are replaced by ``[erased]``:

* PostgreSQL: wedding names, audit details, notification texts, delivery payloads and
  errors, entity fields, pending approvals, and the event archive;
* JetStream: an event holding an identifier is copied, redacted, into the archive (same
  seq, so history and resume serve the redacted copy in order) and securely deleted from
  WEDSYNC_EVENTS; change requests (once the conflicts worker has applied them), presence
  log entries and dead letters holding one are securely deleted; their presence keys are
  purged.

What stays is their user id (the JWT ``sub``, which must be an opaque id) as the actor of
what they did, so history keeps its order and authorship without naming anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from app.auth import ContactCipher, Identity
from app.connections import Connections
from app.db import archive
from app.db.archive import Archived, wedding_lock
from app.db.types import Conn
from app.gateway import control
from app.presence.table import presence_bucket
from app.presence.tracker import record_key
from app.privacy.redact import Redactor
from app.privacy.scan import scan
from streams.definitions import CHANGES, DEAD_LETTERS, EVENTS, PRESENCE_LOG
from streams.presence import Record
from streams.subjects import CHANGES_ROOT, DEAD_LETTER_ROOT, PRESENCE_ROOT, wedding_wildcard

log = logging.getLogger(__name__)

#: How long an erase waits for the conflicts worker to apply changes naming the person.
CHANGES_WAIT = 10.0
#: How long it waits for the gateways to close the person's sockets.
DISCONNECT_WAIT = 5.0
_record = msgspec.json.Decoder(Record)

# (table, key columns, column, kind): free text that may name anyone
_FREE_TEXT: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("weddings", ("id",), "name", "text"),
    ("wedding_members", ("wedding_id", "user_id"), "display_name", "text"),
    ("audit_log", ("id",), "details", "jsonb"),
    ("notifications", ("id",), "title", "text"),
    ("notifications", ("id",), "body", "text"),
    ("notifications", ("id",), "data", "jsonb"),
    ("deliveries", ("id",), "payload", "jsonb"),
    ("deliveries", ("id",), "last_error", "text"),
    ("delivery_attempts", ("delivery_id", "attempt"), "error", "text"),
    ("entities", ("wedding_id", "kind", "entity_id"), "fields", "jsonb"),
    ("approvals", ("id",), "change", "jsonb"),
    ("webhooks", ("id",), "disabled_reason", "text"),
    ("event_archive", ("seq", "stored_at"), "data", "bytea"),
)


@dataclass
class Erasure:
    """What an erase did, by store."""

    weddings: list[uuid.UUID] = field(default_factory=list)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rows_redacted: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    pending_changes: int = 0  # change requests not yet applied: erase again to finish


def _n(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def identifiers(conn: Conn, cipher: ContactCipher, who: Identity) -> Redactor:
    """Everything that identifies ``who`` as stored by us, plus their token's claims."""
    names = {who.name} if who.name else set()
    exact = {who.email} if who.email else set()
    for r in await conn.fetch(
        "SELECT display_name, email_enc, phone_enc FROM wedding_members WHERE user_id = $1",
        who.user_id,
    ):
        if r["display_name"]:
            names.add(r["display_name"])
        for enc in (r["email_enc"], r["phone_enc"]):
            if (value := cipher.open(enc)) is not None:
                exact.add(value)
    for r in await conn.fetch(
        """SELECT host(ip) AS ip, device_fingerprint FROM sessions WHERE user_id = $1
           UNION SELECT host(ip), NULL FROM audit_log WHERE actor = $1""",
        who.user_id,
    ):
        exact.update(v for v in (r["ip"], r["device_fingerprint"]) if v)
    return Redactor(exact=exact, names={n for n in names if n})


async def weddings_of(conn: Conn, user_id: str) -> list[uuid.UUID]:
    rows = await conn.fetch(
        """SELECT wedding_id FROM wedding_members WHERE user_id = $1
           UNION SELECT wedding_id FROM sessions WHERE user_id = $1
           UNION SELECT wedding_id FROM audit_log WHERE actor = $1
           UNION SELECT wedding_id FROM notifications WHERE user_id = $1
           UNION SELECT wedding_id FROM presence_minutes WHERE user_id = $1""",
        user_id,
    )
    return sorted(r["wedding_id"] for r in rows)


async def erase(conns: Connections, cipher: ContactCipher, who: Identity) -> Erasure:
    out = Erasure()
    async with conns.pool.acquire() as conn:
        redactor = await identifiers(conn, cipher, who)
        out.weddings = await weddings_of(conn, who.user_id)
        sessions = await conn.fetch(
            "SELECT id, wedding_id FROM sessions WHERE user_id = $1", who.user_id
        )
        # first their sessions end (no reconnect), their sockets close, their presence goes
        await conn.execute(
            "UPDATE sessions SET ended_at = now(), end_reason = 'erased' "
            "WHERE user_id = $1 AND ended_at IS NULL",
            who.user_id,
        )
    by_wedding: dict[uuid.UUID, list[uuid.UUID]] = {}
    for s in sessions:
        by_wedding.setdefault(s["wedding_id"], []).append(s["id"])
    for wedding_id, ids in by_wedding.items():
        await control.sessions_ended(conns.nc, wedding_id, ids)
    kv = await presence_bucket(conns.js)
    keys = [record_key(str(s["wedding_id"]), str(s["id"])) for s in sessions]
    await _until_disconnected(kv, keys)
    for key in keys:
        with contextlib.suppress(NotFoundError):
            await kv.purge(key)
    if not redactor.empty:
        await _jetstream(conns, redactor, who.user_id, out)
    async with conns.pool.acquire() as conn, conn.transaction():
        await _own_rows(conn, who.user_id, out)
        if not redactor.empty:
            await _free_text(conn, redactor, out.weddings, out)
    return out


async def _until_disconnected(kv: KeyValue, keys: list[str]) -> None:
    """Wait (a little) until the gateways have marked these presence records disconnected:
    purged earlier, a closing socket would write its record (with the name) back."""
    deadline = asyncio.get_running_loop().time() + DISCONNECT_WAIT
    pending = list(keys)
    while pending and asyncio.get_running_loop().time() < deadline:
        still = []
        for key in pending:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value and _record.decode(entry.value).disconnected_at is None:
                still.append(key)
        pending = still
        if pending:
            await asyncio.sleep(0.1)


async def _own_rows(conn: Conn, user_id: str, out: Erasure) -> None:
    for table, column in (
        ("sessions", "user_id"), ("wedding_members", "user_id"), ("notifications", "user_id"),
        ("deliveries", "user_id"), ("notification_preferences", "user_id"),
        ("push_subscriptions", "user_id"), ("presence_minutes", "user_id"),
        ("presence_days", "user_id"),
    ):  # fmt: skip
        n = _n(await conn.execute(f"DELETE FROM {table} WHERE {column} = $1", user_id))
        out.rows_deleted[table] = out.rows_deleted.get(table, 0) + n
    out.rows_redacted["audit_log.ip"] = _n(await conn.execute(
        "UPDATE audit_log SET ip = NULL WHERE actor = $1 AND ip IS NOT NULL", user_id))  # fmt: skip


async def _free_text(
    conn: Conn, redactor: Redactor, weddings: list[uuid.UUID], out: Erasure
) -> None:
    patterns = redactor.like_patterns()
    for table, keys, column, kind in _FREE_TEXT:
        as_text = f"convert_from({column}, 'UTF8')" if kind == "bytea" else f"{column}::text"
        # the archive is big: only the weddings they took part in (by its index)
        scope = "wedding_id = ANY($2::uuid[]) AND " if table == "event_archive" else ""
        rows = await conn.fetch(
            f"SELECT {', '.join(keys)}, {column} AS v FROM {table} "
            f"WHERE {scope}{as_text} ILIKE ANY($1::text[])",
            patterns, *([weddings] if scope else []),
        )  # fmt: skip
        changed = 0
        for r in rows:
            v = r["v"]
            if kind == "bytea":
                new: object = redactor.json_bytes(bytes(v))
            elif kind == "jsonb":
                new = redactor.json_bytes(v.encode()).decode()
            else:
                new = redactor.text(v)
            if new == v or (kind == "bytea" and new == bytes(v)):
                continue
            where = " AND ".join(f"{k} = ${i + 2}" for i, k in enumerate(keys))
            cast = "::jsonb" if kind == "jsonb" else ""
            await conn.execute(f"UPDATE {table} SET {column} = $1{cast} WHERE {where}",
                               new, *(r[k] for k in keys))  # fmt: skip
            changed += 1
        if changed:
            key = f"{table}.{column}"
            out.rows_redacted[key] = out.rows_redacted.get(key, 0) + changed


async def _jetstream(conns: Connections, redactor: Redactor, user_id: str, out: Erasure) -> None:
    js = conns.js
    events = 0
    for wedding_id in out.weddings:
        async with wedding_lock(conns.pool, wedding_id):
            found = [m async for m in scan(js, EVENTS.name, wedding_wildcard(wedding_id))
                     if redactor.found(m.data)]  # fmt: skip
            if not found:
                continue
            rows = [Archived(wedding_id, m.seq, m.subject.rsplit(".", 1)[1], m.stored_at,
                             redactor.json_bytes(m.data)) for m in found]  # fmt: skip
            async with conns.pool.acquire() as conn, conn.transaction():
                await archive.insert(conn, rows)  # a copy archived earlier is redacted later
                await archive.advance(conn, wedding_id, purged_upto=0,
                                      last_seq=rows[-1].seq, moved=0)  # fmt: skip
            for m in found:
                await _delete(js, EVENTS.name, m.seq)
            events += len(found)
    out.messages[EVENTS.name] = events

    presence = 0
    for wedding_id in out.weddings:
        async for m in scan(js, PRESENCE_LOG.name, f"{PRESENCE_ROOT}.{wedding_id}.>"):
            if redactor.found(m.data) or f'"user_id":"{user_id}"'.encode() in m.data:
                await _delete(js, PRESENCE_LOG.name, m.seq)
                presence += 1
    out.messages[PRESENCE_LOG.name] = presence

    dead = [m async for m in scan(js, DEAD_LETTERS.name, f"{DEAD_LETTER_ROOT}.>")
            if redactor.found(m.data)]  # fmt: skip
    for m in dead:
        await _delete(js, DEAD_LETTERS.name, m.seq)
    out.messages[DEAD_LETTERS.name] = len(dead)

    changes = [m async for m in scan(js, CHANGES.name, f"{CHANGES_ROOT}.>")
               if redactor.found(m.data)]  # fmt: skip
    applied = await _applied_below(conns, max((m.seq for m in changes), default=0))
    for m in changes:
        if m.seq <= applied:
            await _delete(js, CHANGES.name, m.seq)
    out.messages[CHANGES.name] = sum(1 for m in changes if m.seq <= applied)
    out.pending_changes = sum(1 for m in changes if m.seq > applied)


async def _applied_below(conns: Connections, wanted: int) -> int:
    """The highest seq every conflicts consumer has applied (waiting a little, up to
    ``wanted``): a change is deleted only once its effect is committed."""
    deadline = asyncio.get_running_loop().time() + CHANGES_WAIT
    while True:
        consumers = await conns.js.consumers_info(CHANGES.name)
        if not consumers:
            return 0  # nothing has applied them yet: keep every one
        floor: int | None = None
        for info in consumers:
            if not info.num_pending and not info.num_ack_pending:
                continue
            done = info.ack_floor.stream_seq if info.ack_floor else 0
            floor = done if floor is None else min(floor, done)
        if floor is None:
            return wanted  # every consumer is caught up
        if floor >= wanted or asyncio.get_running_loop().time() > deadline:
            return floor
        await asyncio.sleep(0.2)


async def _delete(js: JetStreamContext, stream: str, seq: int) -> None:
    """Securely delete one message (the server overwrites its bytes on disk)."""
    with contextlib.suppress(NotFoundError):  # gone already (archived, or erased before)
        await js.delete_msg(stream, seq)
