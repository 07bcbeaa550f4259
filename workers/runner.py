"""The shared JetStream pull-consumer runner every worker is built on.

Guarantees, in order of importance:

* a message is acknowledged only after its handler's transaction committed;
* the commit records (consumer, stream, seq) with the effects, so a redelivery of an
  already-committed message changes nothing twice (it is just acknowledged);
* an unreachable NATS or PostgreSQL is an outage, not a failing message
  (:mod:`workers.outage`): the runner keeps the message in hand, tells JetStream it is
  still working on it, waits until both services answer and tries again. Nothing is
  counted, nothing is dead-lettered, the process stays up, and the outage is logged once;
* a handler failing while both services answer is counted in PostgreSQL
  (``worker_failures``, not JetStream's delivery count, which also counts redeliveries
  caused by outages and restarts) and redelivered after a delay that doubles per failure
  (never a bare nak, which would hot-loop a poison message);
* after ``max_deliveries`` such failures the message is copied to the dead-letter stream
  with the reason in headers, then terminated;
* a deleted consumer is re-created, resuming after the last committed sequence;
* on stop, the message in hand finishes; fetched-but-unstarted ones are handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import asyncpg
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, StatusCode

from config.settings import WorkerSettings
from config.telemetry import extract
from runtime import tasks
from runtime.db.types import Conn
from streams.definitions import ConsumerSpec
from streams.subjects import dead_letter_subject
from workers.outage import OUTAGES, Outages, is_infrastructure, unreachable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
meter = metrics.get_meter(__name__)
HANDLED = meter.create_counter(
    "wedsync.worker.messages",
    unit="{message}",
    description="Messages a worker consumer settled, by result (acked, retried, dead)",
)

Result = Literal["acked", "refused", "retried", "dead", "outage"]
#: Connection errors retried at once (uncounted) while both services answer, per message.
BLIPS = 3
STOP_GRACE = 10.0  # seconds a stopping runner waits for the message in hand


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a handler sees it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    stream: str
    stream_seq: int
    num_delivered: int


Handler = Callable[[Delivery, Conn], Awaitable[None]]
#: A handler may also have ``refuse(delivery, conn, exc) -> bool``: called when it failed
#: while NATS and PostgreSQL answer, in a fresh transaction; True records the message as
#: refused (the handler wrote what refusing means, e.g. telling its author) and acks it at
#: once instead of retrying a failure that would repeat (the conflicts worker: a value
#: PostgreSQL cannot store). False: the failure is counted and retried as usual.
Refuse = Callable[[Delivery, Conn, Exception], Awaitable[bool]]


class _NotRefused(Exception):
    """Rolls back a refusal the handler declined."""


class Unfinished(Exception):
    """Raised by a handler that failed after an external side effect: the message is
    retried after the usual delay but never dead-lettered, so the effect is completed,
    not orphaned."""


def retry_delay(failures: int, settings: WorkerSettings) -> float:
    """Delay before the attempt after failure number ``failures``: base * 2^(n-1), capped."""
    return float(
        min(settings.retry_base_delay * 2 ** max(failures - 1, 0), settings.retry_max_delay)
    )


class ConsumerRunner:
    """``async with ConsumerRunner(...) as r: await r.wait()`` — consume until stopped."""

    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        spec: ConsumerSpec,
        handler: Handler,
        settings: WorkerSettings,
        *,
        outages: Outages = OUTAGES,
    ) -> None:
        self.js = js
        self.pool = pool
        self.spec = spec
        self.handler = handler
        self.settings = settings
        self.outages = outages
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ConsumerRunner:
        try:
            await self._ensure_consumer(recreate=False)
        except Exception as exc:
            if not is_infrastructure(exc):
                raise  # a declaration the server refuses: fail loudly, at start
            # NATS or PostgreSQL is away at start: the loop creates it once they answer
            log.warning("consumer %s: not created yet (%r); retrying", self.spec.durable, exc)
        self._task = asyncio.create_task(self._loop(), name=f"consumer:{self.spec.durable}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Let the message in hand finish (bounded), then stop. A handler still running after
        :data:`STOP_GRACE` is cancelled: its transaction rolls back, the message is not
        acked and comes back to whoever consumes next (handlers are idempotent)."""
        self._stopping.set()
        if self._task is not None:
            _, running = await asyncio.wait({self._task}, timeout=STOP_GRACE)
            if running:
                log.warning(
                    "consumer %s: handler still running %.0f s after stop; cancelled",
                    self.spec.durable,
                    STOP_GRACE,
                )
                await tasks.stop(self._task)
            elif not self._task.cancelled() and (exc := self._task.exception()) is not None:
                raise exc
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def wait(self) -> None:
        """Until stopped (or the loop failed, re-raising its error)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- consumer management ---------------------------------------------------------------

    async def _last_committed(self) -> int | None:
        async with self.pool.acquire() as conn:
            seq: int | None = await conn.fetchval(
                "SELECT max(stream_seq) FROM worker_consumed WHERE consumer = $1 AND stream = $2",
                self.spec.durable,
                self.spec.stream,
            )
        return seq

    async def _ensure_consumer(self, *, recreate: bool) -> None:
        start = None
        if recreate:
            last = await self._last_committed()
            start = None if last is None else last + 1
            log.warning(
                "consumer %s was deleted; re-creating from seq %s", self.spec.durable, start or 1
            )
        cfg = self.spec.config(
            ack_wait=self.spec.ack_wait or self.settings.ack_wait,
            max_ack_pending=self.spec.max_ack_pending or max(self.settings.batch * 4, 64),
            start_seq=start,
        )
        await self.js.add_consumer(self.spec.stream, cfg)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._sub = await self.js.pull_subscribe_bind(
            durable=self.spec.durable, stream=self.spec.stream
        )

    async def _consumer_exists(self) -> bool:
        try:
            await self.js.consumer_info(self.spec.stream, self.spec.durable)
        except NotFoundError:
            return False
        return True

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        """Never ends before a stop: whatever fails here is an outage to wait out, or a
        deleted consumer to re-create."""
        idle = 0
        while not self._stopping.is_set():
            try:
                if self._sub is None:
                    await self._ensure_consumer(recreate=await self._was_deleted())
                msgs = await self._fetch()
                if msgs is None:
                    return  # stopping
                if not msgs:
                    idle += 1
                    # a deleted consumer answers nothing at all to fetches: look now and then
                    if idle % 3 == 0 and not await self._consumer_exists():
                        await self._ensure_consumer(recreate=True)
                    continue
                idle = 0
            except Exception as exc:
                await self._trouble(exc)
                continue
            for i, msg in enumerate(msgs):
                if self._stopping.is_set():
                    for rest in msgs[i:]:  # hand back at once to another replica
                        with contextlib.suppress(Exception):
                            await rest.nak()
                    break
                await self._process(msg)

    async def _was_deleted(self) -> bool:
        """On a (re)bind: whether the durable existed and is gone (then resume after the
        last commit rather than the declared start)."""
        return await self._last_committed() is not None and not await self._consumer_exists()

    async def _fetch(self) -> list[Msg] | None:
        """The next batch ([] on an idle timeout), or None once stopping."""
        assert self._sub is not None
        batch = self.spec.batch or self.settings.batch
        fetch = asyncio.ensure_future(self._sub.fetch(batch, timeout=1.0))
        stop = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        if fetch not in done:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
            return None
        stop.cancel()
        try:
            return fetch.result()
        except (NatsTimeoutError, TimeoutError):
            return []  # idle, or NATS away: the loop's consumer check tells which

    async def _trouble(self, exc: Exception) -> None:
        """A fetch or consumer request failed: a deleted consumer, or an outage."""
        try:
            if not await self._consumer_exists():
                await self._ensure_consumer(recreate=True)
                return
        except Exception as again:
            exc = again
        else:
            if not is_infrastructure(exc):
                log.warning("consumer %s: fetch failed: %r", self.spec.durable, exc)
        await self.outages.wait_out(self.js, self.pool, self._stopping, detail=repr(exc))
        with contextlib.suppress(TimeoutError):  # healthy again, or a persistent API error
            await asyncio.wait_for(self._stopping.wait(), 0.25)

    async def _process(self, msg: Msg) -> None:
        # the trace of whoever published it (gateway frame, conflicts worker) goes on here
        with tracer.start_as_current_span(
            f"process {self.spec.durable}",
            context=extract(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.spec.durable,
            },
        ) as span:
            meta = msg.metadata
            delivery = Delivery(
                subject=msg.subject,
                data=msg.data,
                headers=dict(msg.headers or {}),
                stream=meta.stream,
                stream_seq=meta.sequence.stream,
                num_delivered=meta.num_delivered,
            )
            result = await self._settle(msg, delivery)
            if result not in ("acked", "refused"):
                span.set_status(StatusCode.ERROR, result)
            HANDLED.add(1, {"consumer": self.spec.durable, "result": result})

    async def _settle(self, msg: Msg, d: Delivery) -> Result:
        """Handle the message until it is acked, counted as failed, or we stop: an outage
        is waited out and the message tried again, uncounted."""
        blips = 0
        while not self._stopping.is_set():
            try:
                failures = await self._handle(d)
            except Exception as exc:
                trace.get_current_span().record_exception(exc)
                reason = f"{type(exc).__name__}: {exc}"[:500]
                down = await unreachable(self.js, self.pool)
                if down is None and is_infrastructure(exc) and blips < BLIPS:
                    # a connection error while both answer now: a blip (a restart just
                    # ended, a pooled connection was stale); a few quick tries, uncounted
                    blips += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 0.5 * blips)
                    continue
                if down is None:
                    try:
                        refused = await self._refused(d, exc)
                    except Exception as settle:
                        if not is_infrastructure(settle):
                            raise
                        self.outages.begin("NATS or PostgreSQL", repr(settle))
                    else:
                        if refused:
                            with contextlib.suppress(Exception):  # a redelivery only acks
                                await msg.ack_sync()
                            return "refused"
                        result = await self._failed(msg, d, reason, isinstance(exc, Unfinished))
                        if result != "outage":
                            return result
                else:
                    self.outages.begin(down, reason)
            else:
                if failures < self.settings.max_deliveries:
                    try:
                        await msg.ack_sync()
                    except Exception:  # committed already: a redelivery is only acked
                        log.warning(
                            "consumer %s: ack of seq %d failed (committed; a redelivery "
                            "is only acknowledged)",
                            self.spec.durable,
                            d.stream_seq,
                        )
                    return "acked"
                result = await self._dead_letter(msg, d, failures, "failed too often before")
                if result != "outage":
                    return result
            await self.outages.wait_out(self.js, self.pool, self._stopping, tick=msg.in_progress)
        return "outage"  # stopping mid-outage: the message comes back after its ack wait

    async def _handle(self, d: Delivery) -> int:
        """Runs the handler in the transaction that records the message as consumed; the
        failures counted so far when they already reached the limit (nothing run), else 0."""
        async with self.pool.acquire() as conn, conn.transaction():
            if d.num_delivered > 1:  # seen before: failed, or its ack was lost
                failures: int | None = await conn.fetchval(
                    """SELECT failures FROM worker_failures
                       WHERE consumer = $1 AND stream = $2 AND stream_seq = $3""",
                    self.spec.durable,
                    d.stream,
                    d.stream_seq,
                )
                if failures is not None and failures >= self.settings.max_deliveries:
                    return failures
            first = await conn.fetchval(
                """INSERT INTO worker_consumed (consumer, stream, stream_seq)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
                self.spec.durable,
                d.stream,
                d.stream_seq,
            )
            if first:
                await self.handler(d, conn)
                if d.num_delivered > 1:
                    await conn.execute(
                        """DELETE FROM worker_failures
                           WHERE consumer = $1 AND stream = $2 AND stream_seq = $3""",
                        self.spec.durable,
                        d.stream,
                        d.stream_seq,
                    )
        return 0

    async def _refused(self, d: Delivery, exc: Exception) -> bool:
        """The handler's say on a failure on healthy services (its optional ``refuse``):
        True when it recorded the message as refused, in a transaction of its own with the
        consumed record, so that it is acked rather than retried."""
        refuse: Refuse | None = getattr(self.handler, "refuse", None)
        if refuse is None:
            return False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                first = await conn.fetchval(
                    """INSERT INTO worker_consumed (consumer, stream, stream_seq)
                       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
                    self.spec.durable,
                    d.stream,
                    d.stream_seq,
                )
                if first and not await refuse(d, conn, exc):
                    raise _NotRefused
        except _NotRefused:
            return False
        return True

    async def _failed(self, msg: Msg, d: Delivery, reason: str, unfinished: bool) -> Result:
        """Count a failure of the message on healthy services; redeliver it later, or
        dead-letter it at the limit. "outage" if a service went away meanwhile."""
        try:
            failures = await self._count(d, reason)
            if failures >= self.settings.max_deliveries and not unfinished:
                return await self._dead_letter(msg, d, failures, reason)
            delay = retry_delay(failures, self.settings)
            log.warning(
                "consumer %s: seq %d failed (%d of %d), retry in %.1fs: %s",
                self.spec.durable,
                d.stream_seq,
                failures,
                self.settings.max_deliveries,
                delay,
                reason,
            )
            await msg.nak(delay=delay)
        except Exception as settle:
            if is_infrastructure(settle):
                self.outages.begin("NATS or PostgreSQL", repr(settle))
                return "outage"
            raise
        return "retried"

    async def _count(self, d: Delivery, reason: str) -> int:
        async with self.pool.acquire() as conn:
            failures: int = await conn.fetchval(
                """INSERT INTO worker_failures (consumer, stream, stream_seq, failures, last_error)
                   VALUES ($1, $2, $3, 1, $4)
                   ON CONFLICT (consumer, stream, stream_seq) DO UPDATE
                   SET failures = worker_failures.failures + 1, last_error = $4,
                       updated_at = now()
                   RETURNING failures""",
                self.spec.durable,
                d.stream,
                d.stream_seq,
                reason.replace("\x00", ""),
            )
        return failures

    async def _dead_letter(self, msg: Msg, d: Delivery, failures: int, reason: str) -> Result:
        log.error(
            "consumer %s: seq %d failed %d times, dead-lettered: %s",
            self.spec.durable,
            d.stream_seq,
            failures,
            reason,
        )
        headers = {
            "Wedsync-Dlq-Consumer": self.spec.durable,
            "Wedsync-Dlq-Stream": d.stream,
            "Wedsync-Dlq-Stream-Seq": str(d.stream_seq),
            "Wedsync-Dlq-Subject": d.subject,
            "Wedsync-Dlq-Deliveries": str(failures),
            "Wedsync-Dlq-Error": reason.replace("\r", " ").replace("\n", " "),
            # stored once even if we crash between this publish and the term
            "Nats-Msg-Id": f"{self.spec.durable}:{d.stream}:{d.stream_seq}",
        }
        try:
            await self.js.publish(dead_letter_subject(self.spec.durable), d.data, headers=headers)
            await msg.term()
        except Exception as exc:
            if is_infrastructure(exc):
                self.outages.begin("NATS", repr(exc))
                return "outage"  # tried again once NATS answers (the count is kept)
            raise
        return "dead"
