"""``DELETE /api/me``: erase one person's personal data — only theirs, only where it is.

Scope. An erase touches the weddings the person belonged to (rows keyed by their user id:
memberships, sessions, audit entries they caused, notifications, presence minutes) and
nothing else. Identifiers come from what each of those weddings stored about them (their
member record there: display name, decrypted email and phone), never from the request:
a token's ``name`` claim or a device fingerprint header can be anything, and once made an
erase key they turned another tenant's guest "Theo's husband Bob" into "[erased]'s
hus[erased] Bob". Matching is whole-word (:mod:`app.privacy.redact`).

What goes:

* rows keyed by their user id: memberships, sessions (IPs, fingerprints, user agents),
  their notifications and deliveries, preferences, push subscriptions, presence rows; the
  IP and device fingerprint of the audit entries they caused; their webhooks are disabled;
* their own messages, by authorship (``actor.user_id``): the content is replaced by
  ``{"erased": true}`` — in JetStream by an archive copy at the same seq and a secure
  delete (history and resume serve the copy in order), in the archive in place, in webhook
  payloads and in the notification texts made from them;
* mentions of them in other members' messages (and server events) of those weddings,
  whole-word (:class:`~app.privacy.redact.Redactor`), and in notification texts there;
* JetStream: their presence log entries, their applied change requests and the dead
  letters of their events, changes and deliveries (secure deletes); their presence keys;
* live documents (app/documents/privacy.py): their private documents (rows, versions and
  their updates in WEDSYNC_DOCS), and their name in shared documents' authorship.

What is not rewritten: wedding state. Entities (the guest list, tasks, vendors…) belong
to the wedding and every client holds a copy, so an erase never updates an entity row:
what must change (a task assigned to them, a vendor record whose ``member`` is them) is
published as a change on WEDSYNC_CHANGES by the system actor; the conflicts worker applies
it like any other and every client folds the resulting ``entity.updated``. Other text of
other people is not searched, and no other wedding is looked at.

What stays is their user id (the JWT ``sub``, an opaque id) as the actor of what they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from app.auth import ContactCipher
from app.documents.privacy import erase as erase_documents
from app.privacy.redact import ERASED, Identifiers, Redactor, erase_event
from app.privacy.scan import StoredMsg, scan
from runtime import control
from runtime.connections import Connections
from runtime.db import archive
from runtime.db.archive import Archived, wedding_lock
from runtime.db.notifications import disable_webhooks_of
from runtime.db.types import Conn
from streams.buckets import PRESENCE_BUCKET, existing_bucket
from streams.changes import ChangeMessage, ChangeRequest, change_subject
from streams.definitions import CHANGES, DEAD_LETTERS, EVENTS, PRESENCE_LOG
from streams.presence import BUCKET, Record
from streams.protocol import SYSTEM_ACTOR, reserved_user_id
from streams.state import EntityKind, Op, validate_fields
from streams.subjects import DEAD_LETTER_ROOT, PRESENCE_ROOT, wedding_wildcard

log = logging.getLogger(__name__)

#: How long an erase waits for the conflicts worker to apply their change requests.
CHANGES_WAIT = 10.0
#: How long it waits for the gateways to close the person's sockets.
DISCONNECT_WAIT = 5.0
_PAGE = 500
_record = msgspec.json.Decoder(Record)
_change = msgspec.json.Decoder(ChangeMessage)

#: Entity fields that hold a member's user id: cleared (as a change) when they are erased.
MEMBER_FIELDS: tuple[tuple[EntityKind, str], ...] = (
    (EntityKind.TASKS, "assignee"),
    (EntityKind.VENDORS, "member"),
)


@dataclass
class Erasure:
    """What an erase did, by store."""

    weddings: list[uuid.UUID] = field(default_factory=list)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rows_redacted: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    pending_changes: int = 0  # their change requests not yet applied: erase again to finish
    changes_queued: int = 0  # state changes published for the conflicts worker to apply

    def count(self, into: dict[str, int], key: str, n: int) -> None:
        if n:
            into[key] = into.get(key, 0) + n


def _n(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def weddings_of(conn: Conn, user_id: str) -> list[uuid.UUID]:
    """The weddings the user belongs or belonged to: rows keyed by their user id."""
    rows = await conn.fetch(
        """SELECT wedding_id FROM wedding_members WHERE user_id = $1
           UNION SELECT wedding_id FROM sessions WHERE user_id = $1
           UNION SELECT wedding_id FROM audit_log WHERE actor = $1
           UNION SELECT wedding_id FROM notifications WHERE user_id = $1
           UNION SELECT wedding_id FROM presence_minutes WHERE user_id = $1""",
        user_id,
    )
    return sorted(r["wedding_id"] for r in rows)


async def identifiers(
    conn: Conn, cipher: ContactCipher, user_id: str, weddings: list[uuid.UUID]
) -> dict[uuid.UUID, Redactor]:
    """Per wedding, a redactor of what that wedding stored about them (no record there
    any more, e.g. removed earlier: nothing to match by name; their messages still go)."""
    out: dict[uuid.UUID, Redactor] = {}
    rows = await conn.fetch(
        "SELECT wedding_id, user_id, display_name, email_enc, phone_enc FROM wedding_members "
        "WHERE wedding_id = ANY($1::uuid[])",
        weddings,
    )
    for wedding_id in weddings:
        here = [r for r in rows if r["wedding_id"] == wedding_id]
        mine = [r for r in here if r["user_id"] == user_id]
        if not mine:
            continue
        me = mine[0]
        others = [r["display_name"] for r in here if r["user_id"] != user_id and r["display_name"]]
        contacts = [cipher.open(me["email_enc"]), cipher.open(me["phone_enc"])]
        redactor = Redactor(Identifiers.of(me["display_name"], contacts, others))
        if not redactor.empty:
            out[wedding_id] = redactor
    return out


async def erase(
    conns: Connections, cipher: ContactCipher, user_id: str, partitions: int
) -> Erasure:
    if reserved_user_id(user_id):  # refused at authentication already; never the system
        raise ValueError(f"{user_id!r} is not a person")
    out = Erasure()
    async with conns.pool.acquire() as conn:
        out.weddings = await weddings_of(conn, user_id)
        redactors = await identifiers(conn, cipher, user_id, out.weddings)
        sessions = await conn.fetch(
            "SELECT id, wedding_id FROM sessions WHERE user_id = $1", user_id
        )
        # first their sessions end (no reconnect), their sockets close, their presence goes
        await conn.execute(
            "UPDATE sessions SET ended_at = now(), end_reason = 'erased' "
            "WHERE user_id = $1 AND ended_at IS NULL",
            user_id,
        )
    by_wedding: dict[uuid.UUID, list[uuid.UUID]] = {}
    for s in sessions:
        by_wedding.setdefault(s["wedding_id"], []).append(s["id"])
    for wedding_id, ids in by_wedding.items():
        await control.sessions_ended(conns.nc, wedding_id, ids)
    await _presence_keys(conns, user_id, out)
    out.changes_queued = await _state_changes(conns, user_id, out.weddings, partitions)
    erased_events = await _events(conns, user_id, redactors, out)
    await _jetstream(conns, user_id, partitions, out)
    deleted, authors = await erase_documents(conns, user_id)
    out.count(out.rows_deleted, "documents", deleted)
    out.count(out.rows_redacted, "document_authors", authors)
    async with conns.pool.acquire() as conn, conn.transaction():
        await _own_rows(conn, user_id, out)
        await _derived_text(conn, user_id, redactors, erased_events, out)
    for wedding_id in out.weddings:  # like a removal: their sockets close everywhere
        await control.role_changed(conns.nc, wedding_id, user_id, None)
    return out


# -- presence -----------------------------------------------------------------------------


async def _presence_keys(conns: Connections, user_id: str, out: Erasure) -> None:
    """Purge every presence key of theirs in their weddings (found by the records' user id,
    not only by their sessions: a session cleaned up long ago may have left one)."""
    kv = await existing_bucket(conns.js, PRESENCE_BUCKET)  # never created here
    if kv is None:
        return  # no bucket, no presence keys
    keys: set[str] = set()
    for wedding_id in out.weddings:
        async for m in scan(conns.js, f"KV_{BUCKET}", f"$KV.{BUCKET}.{wedding_id}.*"):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                if m.data and _record.decode(m.data).user_id == user_id:
                    keys.add(m.subject.split(".", 2)[2])
    await _until_disconnected(kv, sorted(keys))
    for key in sorted(keys):
        with contextlib.suppress(NotFoundError):
            await kv.purge(key)
    out.count(out.messages, f"KV_{BUCKET}", len(keys))


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


# -- wedding state: through the conflicts worker, never behind the clients' backs ---------


async def _state_changes(
    conns: Connections, user_id: str, weddings: list[uuid.UUID], partitions: int
) -> int:
    """Publish a system change clearing each entity field that points at them."""
    async with conns.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT wedding_id, kind, entity_id, version FROM entities
               WHERE wedding_id = ANY($1::uuid[]) AND NOT deleted
                 AND ((kind = 'tasks' AND fields->>'assignee' = $2)
                   OR (kind = 'vendors' AND fields->>'member' = $2))
               ORDER BY wedding_id, kind, entity_id""",
            weddings,
            user_id,
        )
    for r in rows:
        kind = EntityKind(r["kind"])
        name = dict(MEMBER_FIELDS)[kind]
        key = f"erase:{r['wedding_id']}:{kind.value}:{r['entity_id']}:{r['version']}"
        change = ChangeRequest(
            client_id="erase-" + hashlib.sha256(key.encode()).hexdigest()[:24],
            wedding_id=str(r["wedding_id"]),
            actor=SYSTEM_ACTOR,
            entity=kind,
            entity_id=r["entity_id"],
            op=Op.UPDATE,
            fields=validate_fields(kind, Op.UPDATE, {name: None}),
            base_version=r["version"],
            ts=time.time(),
        )
        await conns.js.publish(
            change_subject(str(r["wedding_id"]), partitions),
            msgspec.json.encode(change),
            stream=CHANGES.name,
            headers={"Nats-Msg-Id": key},
        )
    return len(rows)


# -- events: JetStream (archive copy + secure delete) and the archive --------------------


async def _events(
    conns: Connections, user_id: str, redactors: dict[uuid.UUID, Redactor], out: Erasure
) -> list[str]:
    """Rewrite their weddings' events; the ids of their own messages that were erased."""
    js = conns.js
    mine: list[str] = []
    moved = rewritten = 0
    for wedding_id in out.weddings:
        redactor = redactors.get(wedding_id)
        async with wedding_lock(conns.pool, wedding_id):
            found: list[tuple[StoredMsg, bytes]] = []
            async for m in scan(js, EVENTS.name, wedding_wildcard(wedding_id)):
                new = erase_event(m.data, user_id, redactor)
                if new is not None:
                    found.append((m, new))
            if found:
                rows = [
                    Archived(wedding_id, m.seq, m.subject.rsplit(".", 1)[1], m.stored_at, new)
                    for m, new in found
                ]
                async with conns.pool.acquire() as conn, conn.transaction():
                    await archive.insert(conn, rows)  # a copy archived earlier: redacted below
                    await archive.advance(
                        conn, wedding_id, purged_upto=0, last_seq=rows[-1].seq, moved=0
                    )
                for m, _ in found:
                    await _delete(js, EVENTS.name, m.seq)
                moved += len(found)
            mine += [i for _, new in found if (i := _event_id(new))]
            async with conns.pool.acquire() as conn:
                ids, n = await _archived(conn, wedding_id, user_id, redactor)
            mine += ids
            rewritten += n
    out.count(out.messages, EVENTS.name, moved)
    out.count(out.rows_redacted, "event_archive.data", rewritten)
    return sorted(set(mine))


def _event_id(stored: bytes) -> str | None:
    """The id of an event rewritten as an erased message of theirs (None otherwise)."""
    if b'"data":{"erased":true}' not in stored:
        return None
    event_id = json.loads(stored[: stored.index(b',"type":')] + b"}").get("id")
    return str(event_id) if event_id else None


async def _archived(
    conn: Conn, wedding_id: uuid.UUID, user_id: str, redactor: Redactor | None
) -> tuple[list[str], int]:
    mine: list[str] = []
    changed, after = 0, 0
    while True:
        page = await conn.fetch(
            """SELECT seq, stored_at, data FROM event_archive
               WHERE wedding_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            wedding_id,
            after,
            _PAGE,
        )
        for r in page:
            new = erase_event(bytes(r["data"]), user_id, redactor)
            if new is None:
                continue
            await conn.execute(
                "UPDATE event_archive SET data = $1 WHERE seq = $2 AND stored_at = $3",
                new,
                r["seq"],
                r["stored_at"],
            )
            changed += 1
            if event_id := _event_id(new):
                mine.append(event_id)
        if len(page) < _PAGE:
            return mine, changed
        after = page[-1]["seq"]


# -- other JetStream streams --------------------------------------------------------------


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


async def _jetstream(conns: Connections, user_id: str, partitions: int, out: Erasure) -> None:
    js = conns.js
    weddings = {str(w) for w in out.weddings}
    presence = 0
    for wedding_id in out.weddings:
        async for m in scan(js, PRESENCE_LOG.name, f"{PRESENCE_ROOT}.{wedding_id}.>"):
            if _json(m.data).get("user_id") == user_id:
                await _delete(js, PRESENCE_LOG.name, m.seq)
                presence += 1
    out.count(out.messages, PRESENCE_LOG.name, presence)

    dead = 0
    async for m in scan(js, DEAD_LETTERS.name, f"{DEAD_LETTER_ROOT}.>"):
        if _dead_letter_of(m, user_id, weddings):
            await _delete(js, DEAD_LETTERS.name, m.seq)
            dead += 1
    out.count(out.messages, DEAD_LETTERS.name, dead)

    theirs: list[int] = []  # their change requests (a wedding has one partition)
    for wedding_id in out.weddings:
        async for m in scan(js, CHANGES.name, change_subject(str(wedding_id), partitions)):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                msg = _change.decode(m.data)
                if isinstance(msg, ChangeRequest) and msg.actor.user_id == user_id:
                    theirs.append(m.seq)
    applied = await _applied_below(conns, max(theirs, default=0))
    for seq in theirs:
        if seq <= applied:
            await _delete(js, CHANGES.name, seq)
    out.count(out.messages, CHANGES.name, sum(1 for s in theirs if s <= applied))
    out.pending_changes = sum(1 for s in theirs if s > applied)


def _dead_letter_of(m: StoredMsg, user_id: str, weddings: set[str]) -> bool:
    """A dead letter of one of their weddings that they authored or that is addressed to
    them (an event or a change they made, a delivery to them)."""
    body = _json(m.data)
    wedding = str(body.get("wedding_id") or "")
    subject = (m.headers or {}).get("Wedsync-Dlq-Subject", "")
    if not wedding and subject.count(".") >= 2:
        wedding = subject.split(".")[2]
    actor = body.get("actor")
    authored = isinstance(actor, dict) and actor.get("user_id") == user_id
    key = str(body.get("key") or "")
    addressed = body.get("user_id") == user_id or f":{user_id}:" in key
    if addressed and not wedding:
        return True  # a delivery's dead letter names no wedding: its key names them
    return wedding in weddings and (authored or addressed)


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


# -- PostgreSQL ---------------------------------------------------------------------------


async def _own_rows(conn: Conn, user_id: str, out: Erasure) -> None:
    for table in (
        "sessions",
        "wedding_members",
        "notifications",
        "deliveries",
        "notification_preferences",
        "push_subscriptions",
        "presence_minutes",
        "presence_days",
    ):
        n = _n(await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id))
        out.count(out.rows_deleted, table, n)
    ip = _n(
        await conn.execute(
            "UPDATE audit_log SET ip = NULL WHERE actor = $1 AND ip IS NOT NULL", user_id
        )
    )
    out.count(out.rows_redacted, "audit_log.ip", ip)
    fingerprints = _n(
        await conn.execute(
            "UPDATE audit_log SET details = details - 'device_fingerprint' "
            "WHERE actor = $1 AND details ? 'device_fingerprint'",
            user_id,
        )
    )
    out.count(out.rows_redacted, "audit_log.details", fingerprints)
    for wedding_id in out.weddings:
        hooks = await disable_webhooks_of(conn, wedding_id, user_id, "owner_removed")
        out.count(out.rows_redacted, "webhooks.enabled", len(hooks))


async def _derived_text(
    conn: Conn,
    user_id: str,
    redactors: dict[uuid.UUID, Redactor],
    erased: list[str],
    out: Erasure,
) -> None:
    """Copies made from events: other members' notifications of their messages lose the
    text; notification texts naming them in their weddings are redacted; webhook payloads
    of their weddings get the same event rewrite as the stream."""
    n = _n(
        await conn.execute(
            "UPDATE notifications SET body = $2, data = '{}'::jsonb "
            "WHERE event_id = ANY($1::text[])",
            erased,
            ERASED,
        )
    )
    out.count(out.rows_redacted, "notifications.body", n)
    for wedding_id, redactor in redactors.items():
        rows = await conn.fetch(
            """SELECT id, title, body, data::text AS data FROM notifications
               WHERE wedding_id = $1 AND (title ILIKE ANY($2::text[])
                     OR body ILIKE ANY($2::text[]) OR data::text ILIKE ANY($2::text[]))""",
            wedding_id,
            redactor.like_patterns(),
        )
        for r in rows:
            await conn.execute(
                "UPDATE notifications SET title = $2, body = $3, data = $4::jsonb WHERE id = $1",
                r["id"],
                redactor.text(r["title"]),
                redactor.text(r["body"]),
                redactor.json_text(r["data"].encode()).decode(),
            )
        out.count(out.rows_redacted, "notifications.text", len(rows))
    hooks = await conn.fetch(
        """SELECT id, wedding_id, payload::text AS payload FROM deliveries
           WHERE wedding_id = ANY($1::uuid[]) AND channel = 'webhook'""",
        out.weddings,
    )
    changed = 0
    for r in hooks:
        payload = json.loads(r["payload"])
        event = payload.get("data", {}).get("event")
        if not isinstance(event, dict):
            continue
        stored = msgspec.json.encode(
            {k: event.get(k) for k in ("id", "type", "channel", "actor", "data", "ts")}
        )
        new = erase_event(stored, user_id, redactors.get(r["wedding_id"]))
        if new is None:
            continue
        payload["data"]["event"] = json.loads(new)
        await conn.execute(
            "UPDATE deliveries SET payload = $2::jsonb WHERE id = $1", r["id"], json.dumps(payload)
        )
        changed += 1
    out.count(out.rows_redacted, "deliveries.payload", changed)
