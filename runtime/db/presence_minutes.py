"""Presence analytics in PostgreSQL: minute bitmaps per member, wedding and local day.

A sample marks the minute it falls in for every member connected then (``present``) and
for those whose status was ``active`` or ``busy`` (``active``). Days are the wedding's
local days (its time zone), which is how a couple reads "Tuesday".
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from runtime.db.types import Conn

_ZERO = "repeat('0', 1500)::bit(1500)"

_RECORD = f"""
WITH s AS (
    SELECT u.wedding_id, u.user_id, u.active, w.timezone,
           ($1::timestamptz AT TIME ZONE w.timezone)::date AS day
    FROM unnest($2::uuid[], $3::text[], $4::bool[]) AS u (wedding_id, user_id, active)
    JOIN weddings w ON w.id = u.wedding_id
), b AS (
    SELECT wedding_id, user_id, day, active,
           floor(extract(epoch FROM $1::timestamptz - (day::timestamp AT TIME ZONE timezone))
                 / 60)::int AS minute
    FROM s
)
INSERT INTO presence_minutes (wedding_id, user_id, day, present, active)
SELECT wedding_id, user_id, day, set_bit({_ZERO}, minute, 1),
       set_bit({_ZERO}, minute, CASE WHEN active THEN 1 ELSE 0 END)
FROM b
ON CONFLICT (wedding_id, day, user_id) DO UPDATE
SET present = presence_minutes.present | EXCLUDED.present,
    active = presence_minutes.active | EXCLUDED.active
"""


@dataclass(frozen=True, slots=True)
class Sample:
    wedding_id: uuid.UUID
    user_id: str
    active: bool


async def record(conn: Conn, at: dt.datetime, samples: list[Sample]) -> None:
    """Mark the minute containing ``at`` for each sampled member (idempotent)."""
    if not samples:
        return
    await conn.execute(
        _RECORD,
        at,
        [s.wedding_id for s in samples],
        [s.user_id for s in samples],
        [s.active for s in samples],
    )


@dataclass(frozen=True, slots=True)
class DayMinutes:
    day: dt.date
    user_id: str
    display_name: str | None
    role: str | None  # None once the member has left the wedding
    present_minutes: int
    active_minutes: int


async def daily(
    conn: Conn, wedding_id: uuid.UUID, first: dt.date, last: dt.date
) -> list[DayMinutes]:
    rows = await conn.fetch(
        """SELECT p.day, p.user_id, m.display_name, m.role, p.present, p.active
           FROM (SELECT wedding_id, day, user_id,
                        bit_count(present) AS present, bit_count(active) AS active
                 FROM presence_minutes
                 UNION ALL  -- days past the detail window, rolled up by the cleanup job
                 SELECT wedding_id, day, user_id, present_minutes, active_minutes
                 FROM presence_days) p
           LEFT JOIN wedding_members m ON m.wedding_id = p.wedding_id AND m.user_id = p.user_id
           WHERE p.wedding_id = $1 AND p.day BETWEEN $2 AND $3
           ORDER BY p.day, p.user_id""",
        wedding_id,
        first,
        last,
    )
    return [
        DayMinutes(r["day"], r["user_id"], r["display_name"], r["role"], r["present"], r["active"])
        for r in rows
    ]
