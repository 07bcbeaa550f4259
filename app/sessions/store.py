"""Collaboration sessions: random tokens of which only the SHA-256 is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from runtime.db.types import Conn


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class NewSession:
    id: uuid.UUID
    token: str
    expires_at: dt.datetime


_ACTIVE = "ended_at IS NULL AND expires_at > now()"


async def create(
    conn: Conn,
    wedding_id: uuid.UUID,
    user_id: str,
    *,
    ttl: float,
    cap: int,
    fingerprint: str | None,
    ip: str | None,
    user_agent: str | None,
) -> tuple[NewSession, list[uuid.UUID]]:
    """Open a session; end the oldest ones beyond ``cap``. Returns (session, ended ids)."""
    token = secrets.token_urlsafe(32)  # 256 bits
    sid = uuid.uuid4()
    expires: dt.datetime = await conn.fetchval(
        """INSERT INTO sessions (id, wedding_id, user_id, token_hash, device_fingerprint, ip,
                                 user_agent, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
           RETURNING expires_at""",
        sid,
        wedding_id,
        user_id,
        token_hash(token),
        fingerprint,
        ip,
        user_agent,
        ttl,
    )
    ended = await conn.fetch(
        f"""UPDATE sessions SET ended_at = now(), end_reason = 'session_cap'
            WHERE id IN (SELECT id FROM sessions WHERE wedding_id = $1 AND user_id = $2
                         AND {_ACTIVE} ORDER BY created_at DESC, id OFFSET $3)
            RETURNING id""",
        wedding_id,
        user_id,
        cap,
    )
    return NewSession(sid, token, expires), [r["id"] for r in ended]


async def active(
    conn: Conn, wedding_id: uuid.UUID, user_id: str, *, extend_by: float
) -> list[asyncpg.Record]:
    """The user's live sessions for the wedding; asking counts as activity (extends them)."""
    return await conn.fetch(
        f"""UPDATE sessions SET last_seen_at = now(),
                   expires_at = GREATEST(expires_at, now() + make_interval(secs => $3))
            WHERE wedding_id = $1 AND user_id = $2 AND {_ACTIVE}
            RETURNING id, created_at, last_seen_at, expires_at, device_fingerprint,
                      host(ip) AS ip, user_agent""",
        wedding_id,
        user_id,
        extend_by,
    )


async def end(conn: Conn, wedding_id: uuid.UUID, user_id: str, reason: str) -> list[uuid.UUID]:
    rows = await conn.fetch(
        f"""UPDATE sessions SET ended_at = now(), end_reason = $3
            WHERE wedding_id = $1 AND user_id = $2 AND {_ACTIVE} RETURNING id""",
        wedding_id,
        user_id,
        reason,
    )
    return [r["id"] for r in rows]


async def by_token(conn: Conn, token: str) -> asyncpg.Record | None:
    """The live session a token opens, or None (unknown, ended or expired)."""
    return await conn.fetchrow(
        f"SELECT * FROM sessions WHERE token_hash = $1 AND {_ACTIVE}", token_hash(token)
    )


async def wedding_of_token(conn: Conn, token: str) -> uuid.UUID | None:
    """The wedding of the live session a token opens, whichever wedding the connection is
    scoped to (a SECURITY DEFINER function of migration 0011: the one lookup made before
    the wedding is known)."""
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT wedsync_session_wedding($1)", token_hash(token)
    )
    return found


async def touch(conn: Conn, session_id: uuid.UUID, *, extend_by: float) -> dt.datetime | None:
    """A live session was used (a socket's frames): extended; its new expiry, or None when
    it ended or expired."""
    expires: dt.datetime | None = await conn.fetchval(
        f"""UPDATE sessions SET last_seen_at = now(),
                   expires_at = GREATEST(expires_at, now() + make_interval(secs => $2))
            WHERE id = $1 AND {_ACTIVE} RETURNING expires_at""",
        session_id,
        extend_by,
    )
    return expires


async def touch_many(
    conn: Conn, session_ids: list[uuid.UUID], *, extend_by: float
) -> dict[uuid.UUID, dt.datetime]:
    """:func:`touch` for many sessions in one statement: the new expiry of each still live
    (one that ended or expired is missing)."""
    rows = await conn.fetch(
        f"""UPDATE sessions SET last_seen_at = now(),
                   expires_at = GREATEST(expires_at, now() + make_interval(secs => $2))
            WHERE id = ANY($1::uuid[]) AND {_ACTIVE} RETURNING id, expires_at""",
        session_ids,
        extend_by,
    )
    return {r["id"]: r["expires_at"] for r in rows}


async def expiry(conn: Conn, session_id: uuid.UUID) -> dt.datetime | None:
    """When a live session expires (it may have been extended elsewhere); None: it ended or
    expired."""
    expires: dt.datetime | None = await conn.fetchval(
        f"SELECT expires_at FROM sessions WHERE id = $1 AND {_ACTIVE}", session_id
    )
    return expires


async def recheck(conn: Conn, session_id: uuid.UUID, *, extend_by: float) -> asyncpg.Record | None:
    """Opening a socket uses its session: extended as by :func:`touch`, and in the same
    statement its member's current ``role`` and ``display_name`` and the wedding's
    ``status`` (a socket re-reads them once it is in its room). None: the session ended or
    expired; ``role`` NULL: the user is no longer a member."""
    return await conn.fetchrow(
        f"""WITH s AS (UPDATE sessions SET last_seen_at = now(),
                          expires_at = GREATEST(expires_at, now() + make_interval(secs => $2))
                       WHERE id = $1 AND {_ACTIVE}
                       RETURNING wedding_id, user_id, expires_at)
            SELECT s.expires_at, m.role, m.display_name, w.status
            FROM s JOIN weddings w ON w.id = s.wedding_id
            LEFT JOIN wedding_members m ON m.wedding_id = s.wedding_id AND m.user_id = s.user_id""",
        session_id,
        extend_by,
    )


async def collaborators(conn: Conn, wedding_id: uuid.UUID) -> list[asyncpg.Record]:
    """Members with at least one live session."""
    return await conn.fetch(
        f"""SELECT m.user_id, m.role, m.display_name FROM wedding_members m
            WHERE m.wedding_id = $1 AND EXISTS (
                SELECT 1 FROM sessions s WHERE s.wedding_id = m.wedding_id
                AND s.user_id = m.user_id AND s.{_ACTIVE.replace(" AND ", " AND s.")})
            ORDER BY m.user_id""",
        wedding_id,
    )
