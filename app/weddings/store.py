"""Weddings and their members in PostgreSQL. Contact details arrive already sealed."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from runtime.db import scope
from runtime.db.types import Conn
from streams.permissions import Role, WeddingStatus


@dataclass(frozen=True, slots=True)
class Membership:
    """A wedding as one member sees it: the wedding row and the member's role."""

    wedding_id: uuid.UUID
    name: str
    date: dt.date
    timezone: str
    status: WeddingStatus
    created_at: dt.datetime
    role: Role
    display_name: str | None = None  # the member's, when the query selected it
    hot_days: int | None = None  # days its events stay in JetStream (None: server default)

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Membership:
        return cls(
            r["id"],
            r["name"],
            r["date"],
            r["timezone"],
            WeddingStatus(r["status"]),
            r["created_at"],
            Role(r["role"]),
            r.get("display_name"),
            r.get("hot_days"),
        )


_MEMBERSHIP = """SELECT w.id, w.name, w.date, w.timezone, w.status, w.created_at, m.role,
                        m.display_name, w.hot_days
                 FROM weddings w JOIN wedding_members m ON m.wedding_id = w.id
                 WHERE w.id = $1 AND m.user_id = $2"""


async def membership(conn: Conn, wedding_id: uuid.UUID, user_id: str) -> Membership | None:
    row = await conn.fetchrow(_MEMBERSHIP, wedding_id, user_id)
    return None if row is None else Membership.from_row(row)


async def create(
    conn: Conn,
    *,
    name: str,
    date: dt.date,
    timezone: str,
    creator: str,
    display_name: str | None,
    email: bytes | None,
    events_from: int | None = None,
) -> Membership:
    wedding_id = uuid.uuid4()
    # a new wedding is its own scope: the rest of the caller's transaction is in it (RLS)
    await scope.enter(conn, wedding_id)
    await conn.execute(
        "INSERT INTO weddings (id, name, date, timezone, created_by, events_from) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        wedding_id,
        name,
        date,
        timezone,
        creator,
        events_from,
    )
    await conn.execute(
        """INSERT INTO wedding_members (wedding_id, user_id, role, display_name, email_enc,
                                        added_by) VALUES ($1, $2, 'couple', $3, $4, $2)""",
        wedding_id,
        creator,
        display_name,
        email,
    )
    found = await membership(conn, wedding_id, creator)
    assert found is not None
    return found


async def update(conn: Conn, wedding_id: uuid.UUID, changes: dict[str, Any]) -> None:
    if not changes:
        return
    cols = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
    await conn.execute(
        f"UPDATE weddings SET {cols}, updated_at = now() WHERE id = $1",
        wedding_id,
        *changes.values(),
    )


async def member(conn: Conn, wedding_id: uuid.UUID, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM wedding_members WHERE wedding_id = $1 AND user_id = $2", wedding_id, user_id
    )


async def members(conn: Conn, wedding_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM wedding_members WHERE wedding_id = $1 ORDER BY added_at, user_id",
        wedding_id,
    )


async def count_role(conn: Conn, wedding_id: uuid.UUID, role: Role) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM wedding_members WHERE wedding_id = $1 AND role = $2",
        wedding_id,
        role.value,
    )
    return n


async def upsert_member(
    conn: Conn,
    wedding_id: uuid.UUID,
    user_id: str,
    *,
    role: Role,
    display_name: str | None,
    email: bytes | None,
    phone: bytes | None,
    actor: str,
) -> bool:
    """Insert or update; True if the member is new."""
    inserted: bool = await conn.fetchval(
        """INSERT INTO wedding_members AS m
               (wedding_id, user_id, role, display_name, email_enc, phone_enc, added_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (wedding_id, user_id) DO UPDATE SET
               role = EXCLUDED.role,
               display_name = COALESCE(EXCLUDED.display_name, m.display_name),
               email_enc = COALESCE(EXCLUDED.email_enc, m.email_enc),
               phone_enc = COALESCE(EXCLUDED.phone_enc, m.phone_enc),
               updated_at = now()
           RETURNING (xmax = 0)""",
        wedding_id,
        user_id,
        role.value,
        display_name,
        email,
        phone,
        actor,
    )
    return inserted


async def delete_member(conn: Conn, wedding_id: uuid.UUID, user_id: str) -> None:
    await conn.execute(
        "DELETE FROM wedding_members WHERE wedding_id = $1 AND user_id = $2", wedding_id, user_id
    )


async def status(conn: Conn, wedding_id: uuid.UUID) -> WeddingStatus | None:
    """The wedding's status, None if there is no such wedding (any caller: the admin API)."""
    found = await conn.fetchval("SELECT status FROM weddings WHERE id = $1", wedding_id)
    return None if found is None else WeddingStatus(found)
