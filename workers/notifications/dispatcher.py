"""Sends what the planner queued: claims due deliveries, calls the providers, logs each attempt.

Exactly once, as far as a provider lets anyone:

* a delivery is claimed (``sending``, attempt + 1) in a committed transaction before its
  provider call, and marked ``sent`` only with the provider's acceptance;
* each dispatcher holds a PostgreSQL advisory lock for its whole life and stamps its claims
  with it. A claim whose owner's lock is free belongs to a dead process: the attempt is
  logged ``interrupted`` and the delivery goes out again *with the same idempotency key*
  (Message-ID, ``webhook-id``, SMS idempotency token, push ``Topic``), so a provider that
  accepted the first copy can drop the second. Nothing recorded as sent is ever re-sent;
* failures retry on a schedule (``NOTIFY_RETRY``, ``WEBHOOK_RETRY``); then the delivery is
  ``dead`` (copied to the dead-letter stream) and a webhook endpoint is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import asyncpg
import httpx
import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, StatusCode

from config.settings import NotifySettings
from config.telemetry import extract
from runtime.crypto import ContactCipher
from runtime.db.notifications import WAKE
from runtime.guest_contacts import GuestContacts
from streams.notifications import Category, Medium, Notification
from streams.permissions import Channel
from streams.protocol import NotificationSent
from streams.subjects import control_subject, dead_letter_subject
from workers.notifications import deliveries as store
from workers.notifications.channels import (
    EmailChannel,
    PushChannel,
    SendError,
    SmsChannel,
    WebhookChannel,
    webhook_client,
)
from workers.notifications.planner import Clock, utcnow
from workers.notifications.schedule import retry_after
from workers.periodic import Periodic

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
SENDS = metrics.get_meter(__name__).create_counter(
    "wedsync.notification.sends",
    unit="{delivery}",
    description="Notification deliveries attempted, by channel and result",
)

DEAD_LETTERS = dead_letter_subject("notifications")
RECOVER_EVERY = 1.0  # seconds between scans for claims of dead dispatchers


def _queued_by(r: asyncpg.Record) -> Any:
    """The trace context the planner stored with the delivery (none: a new trace)."""
    return extract({"traceparent": r["traceparent"]} if r["traceparent"] else None)


def _calling(provider: str) -> Any:
    """A CLIENT span around one provider call (its HTTP request spans nest inside)."""
    return tracer.start_as_current_span(
        f"{provider} send", kind=SpanKind.CLIENT, attributes={"wedsync.provider": provider}
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # sent | skipped | failed
    detail: str | None = None  # provider reference, skip reason or error
    permanent: bool = False


SENT = Outcome("sent")


def _skip(reason: str) -> Outcome:
    return Outcome("skipped", reason)


class Dispatcher(Periodic):
    """``async with Dispatcher(...) as d: await d.wait()`` — send until stopped: a step
    whenever deliveries are queued (LISTEN/NOTIFY), due, or every ``poll`` seconds."""

    name = "notifications-dispatcher"

    def __init__(
        self,
        pool: asyncpg.Pool,
        nc: NATS,
        js: JetStreamContext,
        settings: NotifySettings,
        cipher: ContactCipher,
        clock: Clock = utcnow,
        poll: float = 1.0,
    ) -> None:
        self.pool, self.nc, self.js = pool, nc, js
        self.settings, self.cipher, self.clock, self.every = settings, cipher, clock, poll
        self.contacts = GuestContacts(cipher)  # a guest's contact opens for the receiver
        self.owner = secrets.randbelow(2**31 - 1) + 1
        self._wake = asyncio.Event()
        self._lock_conn: Any = None
        self._http = httpx.AsyncClient()
        self.email = EmailChannel(settings)
        self.sms = SmsChannel(settings, self._http)
        self.push = PushChannel(settings)
        self._hooks_http = webhook_client(settings)  # its own: public addresses only
        self.webhook = WebhookChannel(settings, self._hooks_http)
        self._recovered_at = -RECOVER_EVERY  # monotonic time of the last recovery scan

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._lock_conn = await self.pool.acquire()
        await store.lock(self._lock_conn, self.owner)
        await self._lock_conn.add_listener(WAKE, self._on_wake)
        return await super().__aenter__()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(et, e, tb)
        await self._http.aclose()
        await self._hooks_http.aclose()
        await self.push.close()
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.remove_listener(WAKE, self._on_wake)
                await store.unlock(self._lock_conn, self.owner)
            await self.pool.release(self._lock_conn)

    def _on_wake(self, *_: object) -> None:
        self._wake.set()

    async def tick(self) -> int:
        return await self.run_once()

    async def pause(self, claimed: object) -> None:
        if claimed:  # there may be more due right now
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.every)
        self._wake.clear()

    # -- one step --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Recover dead claims, then claim and send what is due; how many were claimed."""
        if time.monotonic() - self._recovered_at >= RECOVER_EVERY:
            self._recovered_at = time.monotonic()
            await self.recover()
        now = self.clock()
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                # no more than can be in flight at once: a claim means "inside a send"
                ids = await store.claim(conn, now, max(self.settings.concurrency, 1), self.owner)
            if not ids:
                return 0
            rows = await store.details(conn, ids)
        digests: dict[tuple[Any, str], list[asyncpg.Record]] = defaultdict(list)
        jobs = []
        for r in rows:
            if r["channel"] == Medium.EMAIL and r["digest"]:
                digests[(r["wedding_id"], r["user_id"])].append(r)
            else:
                jobs.append(self._one(r))
        jobs += [self._digest(group) for group in digests.values()]
        await asyncio.gather(*jobs)
        return len(ids)

    async def recover(self) -> int:
        """Re-queue claims of dispatchers that died mid-send (their advisory lock is free)."""
        async with self.pool.acquire() as conn:
            owners = await store.other_claimants(conn, self.owner)
            count = 0
            for owner in owners:
                if not await store.try_lock(conn, owner):
                    continue  # alive: its sends are in flight
                try:
                    async with conn.transaction():
                        now = self.clock()
                        back = await store.release_claims(conn, owner, now)
                        await store.log_attempts(
                            conn,
                            [
                                (r["id"], now, "interrupted", "sender stopped mid-send")
                                for r in back
                            ],
                        )
                        count += len(back)
                finally:
                    await store.unlock(conn, owner)
        if count:
            log.warning("re-queued %d deliveries interrupted by a stopped sender", count)
        return count

    # -- sending -----------------------------------------------------------------------------

    async def _one(self, r: asyncpg.Record) -> None:
        # the send continues the trace of the event that queued it (deliveries.traceparent)
        with tracer.start_as_current_span(
            f"deliver {r['channel']}",
            context=_queued_by(r),
            kind=SpanKind.INTERNAL,
            attributes={"wedsync.delivery_id": r["id"], "wedsync.attempt": r["attempts"]},
        ) as span:
            try:
                outcome = await self._send(r)
            except SendError as exc:
                outcome = Outcome("failed", str(exc), permanent=exc.permanent)
            except Exception as exc:  # a bug, not the provider: retried like a failure
                log.exception("delivery %d: unexpected error", r["id"])
                outcome = Outcome("failed", f"internal: {type(exc).__name__}")
            span.set_attribute("wedsync.result", outcome.result)
            if outcome.result == "failed":
                span.set_status(StatusCode.ERROR, outcome.detail)
            await self._finish([r], outcome)

    async def _send(self, r: asyncpg.Record) -> Outcome:
        channel = Medium(r["channel"])
        if r["unless_read"] and r["read_at"] is not None:
            return _skip("read in app")
        if r["reason"] == "escalation" and r["acked"] is not None:
            return _skip("acknowledged")
        if channel is Medium.IN_APP:
            await self._in_app(r)
            return SENT
        if channel is Medium.WEBHOOK:
            if not r["enabled"]:
                return Outcome("failed", "endpoint_disabled", permanent=True)
            secret = self.cipher.open(r["secret_enc"])
            assert secret is not None
            payload = json.loads(r["payload"])
            event = payload.get("data", {}).get("event", {})
            if event.get("channel") == Channel.GUESTS.value:
                self.contacts.open_event(event)
            body = json.dumps(payload, separators=(",", ":"))
            with _calling("webhook"):
                ref = await self.webhook.send(key=r["key"], url=r["url"], secret=secret, body=body)
            return Outcome("sent", ref)
        title, text = r["title"], r["body"]
        if channel is Medium.EMAIL:
            if not self.email.configured:
                return _skip("not_configured")
            to = self.cipher.open(r["email_enc"])
            if to is None:
                return _skip("no_address")
            with _calling("smtp"):
                ref = await self.email.send(key=r["key"], to=to, subject=title, text=text)
            return Outcome("sent", ref)
        if channel is Medium.SMS:
            if not self.sms.configured:
                return _skip("not_configured")
            phone = self.cipher.open(r["phone_enc"])
            if phone is None:
                return _skip("no_address")
            with _calling("sms"):
                ref = await self.sms.send(key=r["key"], to=phone, text=f"{title}: {text}")
            return Outcome("sent", ref)
        return await self._push(r)

    async def _push(self, r: asyncpg.Record) -> Outcome:
        if not self.push.configured:
            return _skip("not_configured")
        async with self.pool.acquire() as conn:
            subs = await store.push_subscriptions(conn, r["user_id"])
        if not subs:
            return _skip("no_subscription")
        payload = {
            "id": str(r["nid"]),
            "wedding_id": str(r["wedding_id"]),
            "category": r["category"],
            "title": r["title"],
            "body": r["body"],
        }
        accepted, errors, retryable = 0, [], False
        for s in subs:
            try:
                with _calling("push"):
                    await self.push.send(
                        key=r["key"],
                        endpoint=s["endpoint"],
                        p256dh=s["p256dh"],
                        auth=s["auth"],
                        payload=payload,
                    )
                accepted += 1
            except SendError as exc:
                errors.append(str(exc))
                retryable = retryable or not exc.permanent
                if exc.gone:
                    async with self.pool.acquire() as conn:
                        await store.forget_push_subscription(conn, s["id"])
        if accepted:
            return Outcome("sent", f"{accepted}/{len(subs)} subscriptions")
        return Outcome("failed", "; ".join(errors), permanent=not retryable)

    async def _in_app(self, r: asyncpg.Record) -> None:
        note = Notification(
            id=r["nid"],
            wedding_id=r["wedding_id"],
            category=Category(r["category"]),
            title=r["title"],
            body=r["body"],
            event_id=r["event_id"],
            event_type=r["event_type"],
            event_seq=r["event_seq"],
            data=json.loads(r["data"]),
            created_at=r["n_created"],
            read_at=r["read_at"],
        )
        ctl = NotificationSent(user_id=r["user_id"], notification=note)
        await self.nc.publish(control_subject(r["wedding_id"]), msgspec.json.encode(ctl))

    async def _digest(self, rows: list[asyncpg.Record]) -> None:
        first = rows[0]
        with tracer.start_as_current_span("deliver digest", context=_queued_by(first)):
            await self._send_digest(rows)

    async def _send_digest(self, rows: list[asyncpg.Record]) -> None:
        first = rows[0]
        try:
            if not self.email.configured:
                outcome = _skip("not_configured")
            elif (to := self.cipher.open(first["email_enc"])) is None:
                outcome = _skip("no_address")
            else:
                text = "\n\n".join(f"{r['title']}\n{r['body']}" for r in rows)
                with _calling("smtp"):
                    ref = await self.email.send(
                        key=min(r["key"] for r in rows),
                        to=to,
                        subject=f"WedSync: {len(rows)} update(s) today",
                        text=text,
                    )
                outcome = Outcome("sent", ref)
        except SendError as exc:
            outcome = Outcome("failed", str(exc), permanent=exc.permanent)
        await self._finish(rows, outcome)

    # -- results -----------------------------------------------------------------------------

    async def _finish(self, rows: list[asyncpg.Record], o: Outcome) -> None:
        SENDS.add(len(rows), {"channel": rows[0]["channel"], "result": o.result})
        now = self.clock()
        ids = [r["id"] for r in rows]
        attempt_result = o.result
        async with self.pool.acquire() as conn, conn.transaction():
            if o.result == "sent":
                await store.sent(conn, ids, self.owner, now, o.detail)
            elif o.result == "skipped":
                await store.skipped(conn, ids, self.owner, o.detail)
            else:
                await self._failed(conn, rows, o, now)
            await store.log_attempts(
                conn,
                [
                    (r["id"], now, attempt_result, o.detail if o.result != "sent" else None)
                    for r in rows
                ],
            )

    async def _failed(
        self, conn: Any, rows: list[asyncpg.Record], o: Outcome, now: dt.datetime
    ) -> None:
        webhook = rows[0]["channel"] == Medium.WEBHOOK
        schedule = self.settings.webhook_schedule() if webhook else self.settings.retry_schedule()
        delay = None if o.permanent else retry_after(rows[0]["attempts"], schedule)
        ids = [r["id"] for r in rows]
        if delay is not None:
            due = now + dt.timedelta(seconds=delay)
            await store.retry_at(conn, ids, self.owner, due, o.detail)
            return
        status = "failed" if o.detail == "endpoint_disabled" else "dead"
        await store.given_up(conn, ids, self.owner, status, o.detail)
        if status != "dead":
            return
        for r in rows:
            body = {
                "delivery_id": r["id"],
                "key": r["key"],
                "channel": r["channel"],
                "category": r["category"],
                "attempts": r["attempts"],
                "error": o.detail,
            }
            # once per death: a replayed delivery that dies again is a new dead letter
            logged = await store.attempts_logged(conn, r["id"])
            msg_id = f"delivery:{r['id']}:{logged}"
            await self.js.publish(
                DEAD_LETTERS, json.dumps(body).encode(), headers={"Nats-Msg-Id": msg_id}
            )
        if webhook:
            why = f"a delivery failed {rows[0]['attempts']} times: {o.detail}"
            await store.disable_webhook(conn, rows[0]["webhook_id"], now, why)
            log.warning("webhook %s disabled after persistent failure", rows[0]["webhook_id"])
