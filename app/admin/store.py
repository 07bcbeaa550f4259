"""What the operator API reads across weddings: counts for ``GET /api/admin/stats``."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.db.types import Conn


@dataclass(frozen=True, slots=True)
class Counts:
    weddings: dict[str, int]  # by status
    active_sessions: int
    outbox: dict[str, int]  # notification deliveries not yet sent, by status


async def counts(conn: Conn) -> Counts:
    by_status = await conn.fetch("SELECT status, count(*) AS n FROM weddings GROUP BY status")
    sessions: int = await conn.fetchval(
        "SELECT count(*) FROM sessions WHERE ended_at IS NULL AND expires_at > now()"
    )
    unsent = await conn.fetch(
        """SELECT status, count(*) AS n FROM deliveries
           WHERE status IN ('pending', 'sending', 'failed', 'dead') GROUP BY status"""
    )
    return Counts(
        weddings={r["status"]: r["n"] for r in by_status},
        active_sessions=sessions,
        outbox={r["status"]: r["n"] for r in unsent},
    )
