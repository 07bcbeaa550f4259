"""Emergencies are re-sent by SMS to the couple and planner, every ``NOTIFY_ESCALATE_EVERY``
seconds, until one of the people told acknowledges (``POST /api/notifications/{id}/ack``)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from config.settings import NotifySettings
from streams.notifications import Category, Medium
from workers.notifications import store
from workers.notifications.planner import Clock, utcnow
from workers.periodic import Periodic


class Escalator(Periodic):
    name = "emergency-escalation"

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: NotifySettings,
        clock: Clock = utcnow,
        every: float = 1.0,
    ) -> None:
        self.pool, self.settings, self.clock, self.every = pool, settings, clock, every

    async def tick(self) -> int:
        """Queue the next round of every due, unacknowledged emergency; rounds queued."""
        now = self.clock()
        rounds = 0
        async with self.pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """SELECT event_id, wedding_id, round FROM escalations
                   WHERE acknowledged_at IS NULL AND next_at <= $1 AND round < $2
                   ORDER BY next_at FOR UPDATE SKIP LOCKED""",
                now,
                self.settings.escalate_rounds,
            )
            out: list[store.Outgoing] = []
            for e in due:
                n = e["round"] + 1
                told = await conn.fetch(
                    """SELECT n.id, n.user_id FROM notifications n
                       JOIN wedding_members m ON m.wedding_id = n.wedding_id
                                             AND m.user_id = n.user_id
                       WHERE n.event_id = $1 AND m.role IN ('couple', 'planner')""",
                    e["event_id"],
                )
                out += [
                    store.Outgoing(
                        key=f"{e['event_id']}:{t['user_id']}:sms:r{n}",
                        wedding_id=e["wedding_id"],
                        channel=Medium.SMS,
                        category=Category.EMERGENCY.value,
                        due_at=now,
                        event_id=e["event_id"],
                        notification_id=t["id"],
                        user_id=t["user_id"],
                        reason="escalation",
                    )
                    for t in told
                ]
                after = dt.timedelta(seconds=self.settings.escalate_every)
                await conn.execute(
                    "UPDATE escalations SET round = $2, next_at = $3 WHERE event_id = $1",
                    e["event_id"],
                    n,
                    now + after,
                )
                rounds += 1
            await store.queue(conn, out, now)
        return rounds
