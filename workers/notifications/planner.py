"""Consumes wedding events and decides, in the runner's transaction, who hears about each
on which channel and when: in-app notifications and outbox rows (deliveries) written once
per idempotency key. The dispatcher sends them; nothing here talks to a provider.

Timing per (recipient, channel), emergencies excepted (they go everywhere at once):

* a member active in the room right now gets the in-app notice only; the other channels
  wait ``NOTIFY_UNSEEN_AFTER`` and are skipped if it was read by then;
* inside the member's quiet hours (wedding time zone) they wait for the end of them;
* with the digest on, emails wait for the daily digest.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import uuid
from collections.abc import Callable

import msgspec

from config.settings import NotifySettings
from runtime.db import scope
from runtime.db.types import Conn
from runtime.presence.table import PresenceTable
from streams.notifications import Category, Medium, Preferences
from streams.presence import Status
from streams.protocol import Event
from workers.notifications import store
from workers.notifications.rules import Notice, notices
from workers.notifications.schedule import next_digest, quiet_until
from workers.runner import Delivery

NOTIFICATION_NAMESPACE = uuid.UUID("7a3c51e0-1b8e-4c52-a0f4-2f6d9e8b3c17")
ACTIVE = frozenset({Status.ACTIVE, Status.BUSY})

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]
_decode = msgspec.json.Decoder(Event)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def notification_id(event_id: str, user_id: str) -> uuid.UUID:
    return uuid.uuid5(NOTIFICATION_NAMESPACE, f"{event_id}:{user_id}")


def matches(patterns: list[str], event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def webhook_body(wedding_id: uuid.UUID, seq: int, event: Event) -> dict[str, object]:
    """The Standard Webhooks payload shape: ``type``, ``timestamp``, ``data``."""
    return {
        "type": event.type,
        "timestamp": dt.datetime.fromtimestamp(event.ts, dt.UTC).isoformat(),
        "data": {"wedding_id": str(wedding_id), "seq": seq, "event": msgspec.to_builtins(event)},
    }


class Planner:
    """The handler of the ``notifications`` consumer."""

    def __init__(
        self,
        settings: NotifySettings,
        presence: PresenceTable | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.presence = presence
        self.clock = clock

    def active_now(self, wedding_id: uuid.UUID, user_id: str) -> bool:
        if self.presence is None:
            return False
        # a device within its reconnect grace is not looking at the app
        return any(
            r.user_id == user_id and r.status in ACTIVE and r.disconnected_at is None
            for r in self.presence.room(str(wedding_id))
        )

    async def __call__(self, d: Delivery, conn: Conn) -> None:
        wedding_id = uuid.UUID(d.subject.split(".")[2])
        try:
            event = _decode.decode(d.data)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            # stored before the edge refused such input (too deep, not an envelope): it
            # would fail the same way every time, and nobody is to hear about it
            log.warning("skipped unreadable event %s:%d: %s", d.stream, d.stream_seq, exc)
            return
        await scope.enter(conn, wedding_id)  # this transaction sees that wedding only (RLS)
        wedding = await store.wedding(conn, wedding_id)
        if wedding is None:  # deleted since: nobody left to tell
            return
        now = self.clock()
        told = notices(event, wedding.context)
        hooks = [
            h
            for h in await store.webhooks_for(conn, wedding_id)
            if matches(list(h["events"]), event.type)
        ]
        if not told and not hooks:
            return
        prefs = await store.preferences(conn, wedding_id, [n.user_id for n in told])
        out: list[store.Outgoing] = []
        for n in told:
            nid = notification_id(event.id, n.user_id)
            await store.add_notification(
                conn,
                id=nid,
                wedding_id=wedding_id,
                user_id=n.user_id,
                event_id=event.id,
                event_seq=d.stream_seq,
                event_type=event.type,
                category=n.category,
                title=n.title,
                body=n.body,
                data=n.data,
                at=now,
            )
            p = prefs.get(n.user_id) or Preferences()
            out += self._deliveries(n, p, wedding_id, wedding.timezone, event.id, nid, now)
        if any(n.escalate for n in told):
            every = dt.timedelta(seconds=self.settings.escalate_every)
            await store.start_escalation(conn, event.id, wedding_id, now + every)
        body = webhook_body(wedding_id, d.stream_seq, event)
        for h in hooks:
            out.append(
                store.Outgoing(
                    key=f"{event.id}:webhook:{h['id']}",
                    wedding_id=wedding_id,
                    channel=Medium.WEBHOOK,
                    category="webhook",
                    due_at=now,
                    event_id=event.id,
                    webhook_id=h["id"],
                    payload=body,
                )
            )
        await store.queue(conn, out, now)

    def _deliveries(
        self,
        n: Notice,
        p: Preferences,
        wedding_id: uuid.UUID,
        tz: str,
        event_id: str,
        nid: uuid.UUID,
        now: dt.datetime,
    ) -> list[store.Outgoing]:
        urgent = n.category is Category.EMERGENCY
        active = not urgent and self.active_now(wedding_id, n.user_id)
        quiet = None if urgent else quiet_until(now, tz, p.quiet_hours)
        out = []
        for medium in p.media(n.category):
            due, reason, unless_read, digest = now, None, False, False
            if medium is not Medium.IN_APP and not urgent:
                if active:
                    due = now + dt.timedelta(seconds=self.settings.unseen_after)
                    reason, unless_read = "unseen", True
                if quiet is not None and quiet > due:
                    due, reason = quiet, "quiet_hours"
                if medium is Medium.EMAIL and p.digest:
                    due = max(due, next_digest(now, tz, self.settings.digest_hour))
                    reason, digest = "digest", True
            out.append(
                store.Outgoing(
                    key=f"{event_id}:{n.user_id}:{medium.value}",
                    wedding_id=wedding_id,
                    channel=medium,
                    category=n.category.value,
                    due_at=due,
                    event_id=event_id,
                    notification_id=nid,
                    user_id=n.user_id,
                    reason=reason,
                    unless_read=unless_read,
                    digest=digest,
                )
            )
        return out
