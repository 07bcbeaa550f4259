"""The conflicts worker's reads and writes of wedding state (inside the runner's transaction)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec

from runtime.db.types import Conn
from streams.changes import ChangeRequest
from streams.permissions import WeddingStatus
from streams.state import EntityKind
from workers.conflicts.outcome import Entity, Outcome, PendingApproval

_LOCK = """SELECT w.status FROM weddings w JOIN wedding_state s ON s.wedding_id = w.id
           WHERE w.id = $1 FOR UPDATE OF s"""


async def lock_wedding(conn: Conn, wedding_id: uuid.UUID) -> WeddingStatus | None:
    """The wedding's status, with its state row locked until commit (None: no wedding).
    One round trip once the wedding has its state row (from its first change on)."""
    status = await conn.fetchval(_LOCK, wedding_id)
    if status is None:  # its first change (or no such wedding)
        await conn.execute(
            """INSERT INTO wedding_state (wedding_id) SELECT id FROM weddings WHERE id = $1
               ON CONFLICT DO NOTHING""",
            wedding_id,
        )
        status = await conn.fetchval(_LOCK, wedding_id)
        if status is None:
            return None
    return WeddingStatus(status)


def _entity(r: Any) -> Entity:
    return Entity(
        EntityKind(r["kind"]),
        r["entity_id"],
        r["version"],
        r["deleted"],
        json.loads(r["fields"]),
        json.loads(r["field_versions"]),
        json.loads(r["field_authors"]),
        r["created_by"],
        r["updated_by"],
    )


async def load(conn: Conn, wedding_id: uuid.UUID, change: ChangeRequest) -> list[Entity]:
    """What the change may touch: the entity, or the whole timeline for timeline changes."""
    if change.entity is EntityKind.TIMELINE:
        # ordered: the outcome (and so each event's dedup id) must not depend on row order
        rows = await conn.fetch(
            "SELECT * FROM entities WHERE wedding_id = $1 AND kind = $2 ORDER BY entity_id",
            wedding_id,
            change.entity.value,
        )
    else:
        rows = await conn.fetch(
            "SELECT * FROM entities WHERE wedding_id = $1 AND kind = $2 AND entity_id = $3",
            wedding_id,
            change.entity.value,
            change.entity_id,
        )
    return [_entity(r) for r in rows]


async def save(conn: Conn, wedding_id: uuid.UUID, out: Outcome, change_seq: int) -> None:
    if out.writes:
        await conn.executemany(
            """INSERT INTO entities (wedding_id, kind, entity_id, version, deleted, fields,
                                     field_versions, field_authors, created_by, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (wedding_id, kind, entity_id) DO UPDATE SET
                 version = EXCLUDED.version, deleted = EXCLUDED.deleted,
                 fields = EXCLUDED.fields, field_versions = EXCLUDED.field_versions,
                 field_authors = EXCLUDED.field_authors, updated_by = EXCLUDED.updated_by,
                 updated_at = now()""",
            [
                (
                    wedding_id,
                    e.kind.value,
                    e.entity_id,
                    e.version,
                    e.deleted,
                    json.dumps(e.fields),
                    json.dumps(e.field_versions),
                    json.dumps(e.field_authors),
                    e.created_by,
                    e.updated_by,
                )
                for e in out.writes.values()
            ],
        )
    if out.audits:
        await conn.executemany(
            """INSERT INTO audit_log (wedding_id, actor, action, details)
               VALUES ($1, $2, 'entity_changed', $3)""",
            [
                (
                    wedding_id,
                    a.entity.updated_by,
                    json.dumps(
                        {
                            "entity": a.entity.kind.value,
                            "entity_id": a.entity.entity_id,
                            "op": a.op,
                            "version": a.entity.version,
                            "before": a.before,
                            "after": a.after,
                            "change_seq": change_seq,
                        }
                    ),
                )
                for a in out.audits
            ],
        )
    if out.approval is not None:
        await _save_approval(conn, wedding_id, out.approval)


async def _save_approval(conn: Conn, wedding_id: uuid.UUID, a: PendingApproval) -> None:
    await conn.execute(
        """INSERT INTO approvals (id, wedding_id, change, requested_by, requested_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        uuid.UUID(a.id),
        wedding_id,
        msgspec.json.encode(a.change).decode(),
        a.change.actor.user_id,
        dt.datetime.fromtimestamp(a.change.ts, dt.UTC),
        dt.datetime.fromtimestamp(a.expires_at, dt.UTC),
    )


async def pending_approval(
    conn: Conn, wedding_id: uuid.UUID, approval_id: str
) -> ChangeRequest | None:
    """The held change of a still-pending approval, locked until commit."""
    try:
        key = uuid.UUID(approval_id)
    except ValueError:
        return None
    raw = await conn.fetchval(
        """SELECT change FROM approvals WHERE id = $1 AND wedding_id = $2 AND status = 'pending'
           FOR UPDATE""",
        key,
        wedding_id,
    )
    return None if raw is None else msgspec.json.decode(raw, type=ChangeRequest)


async def decide(conn: Conn, approval_id: str, status: str, by: str, at: float) -> None:
    await conn.execute(
        "UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4 WHERE id = $1",
        uuid.UUID(approval_id),
        status,
        by,
        dt.datetime.fromtimestamp(at, dt.UTC),
    )


async def due_approvals(conn: Conn, now: dt.datetime) -> list[tuple[uuid.UUID, uuid.UUID]]:
    rows = await conn.fetch(
        "SELECT id, wedding_id FROM approvals WHERE status = 'pending' AND expires_at <= $1",
        now,
    )
    return [(r["id"], r["wedding_id"]) for r in rows]
