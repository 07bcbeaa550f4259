"""The shared JetStream pull-consumer runner every worker is built on.

Guarantees, in order of importance:

* a message is acknowledged only after its handler's transaction committed;
* the commit records (consumer, stream, seq) with the effects, so a redelivery of an
  already-committed message changes nothing twice (it is just acknowledged);
* a failing handler's message is redelivered after a delay that doubles per attempt
  (never a bare nak, which would hot-loop a poison message);
* after ``max_deliveries`` failures the message is copied to the dead-letter stream with
  the reason in headers, then terminated;
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

import asyncpg
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, StatusCode

from app.db.types import Conn
from config.settings import WorkerSettings
from config.telemetry import extract
from streams.definitions import ConsumerSpec
from streams.subjects import dead_letter_subject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
meter = metrics.get_meter(__name__)
HANDLED = meter.create_counter(
    "wedsync.worker.messages", unit="{message}",
    description="Messages a worker consumer settled, by result (acked, retried, dead)",
)  # fmt: skip


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


class Unfinished(Exception):
    """Raised by a handler that failed after an external side effect (e.g. a publish):
    the message is retried, never dead-lettered, so the effect is completed, not orphaned.
    A failed commit after a handler returned is treated the same way."""


def retry_delay(num_delivered: int, settings: WorkerSettings) -> float:
    """Delay before redelivery number ``num_delivered + 1``: base * 2^(n-1), capped."""
    return float(
        min(settings.retry_base_delay * 2 ** max(num_delivered - 1, 0), settings.retry_max_delay)
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
    ) -> None:
        self.js = js
        self.pool = pool
        self.spec = spec
        self.handler = handler
        self.settings = settings
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ConsumerRunner:
        await self._ensure_consumer(recreate=False)
        self._task = asyncio.create_task(self._loop(), name=f"consumer:{self.spec.durable}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
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
            log.warning("consumer %s was deleted; re-creating from seq %s", self.spec.durable,
                        start or 1)  # fmt: skip
        cfg = self.spec.config(
            ack_wait=self.spec.ack_wait or self.settings.ack_wait,
            max_ack_pending=self.spec.max_ack_pending or max(self.settings.batch * 4, 64),
            start_seq=start,
        )
        await self.js.add_consumer(self.spec.stream, cfg)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
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
        idle_checks = 0
        while not self._stopping.is_set():
            assert self._sub is not None
            batch = self.spec.batch or self.settings.batch
            fetch = asyncio.ensure_future(self._sub.fetch(batch, timeout=1.0))
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
                break
            stop.cancel()
            try:
                msgs = fetch.result()
            except (NatsTimeoutError, TimeoutError):
                idle_checks += 1
                if idle_checks % 3 == 0 and not await self._consumer_exists():
                    await self._ensure_consumer(recreate=True)
                continue
            except (NotFoundError, ServiceUnavailableError, APIError) as exc:
                # A deleted consumer answers fetches with 404/503; anything else: back off.
                if not await self._consumer_exists():
                    await self._ensure_consumer(recreate=True)
                else:
                    log.warning("consumer %s: fetch failed: %r", self.spec.durable, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                continue
            idle_checks = 0
            for i, msg in enumerate(msgs):
                if self._stopping.is_set():
                    for rest in msgs[i:]:  # hand back at once to another replica
                        with contextlib.suppress(Exception):
                            await rest.nak()
                    break
                await self._process(msg)

    async def _process(self, msg: Msg) -> None:
        # the trace of whoever published it (gateway frame, conflicts worker) goes on here
        with tracer.start_as_current_span(
            f"process {self.spec.durable}", context=extract(msg.headers), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject,
                        "messaging.consumer.group.name": self.spec.durable},
        ) as span:  # fmt: skip
            result = await self._settle(msg)
            if result != "acked":
                span.set_status(StatusCode.ERROR, result)
            HANDLED.add(1, {"consumer": self.spec.durable, "result": result})

    async def _settle(self, msg: Msg) -> str:
        meta = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            stream=meta.stream,
            stream_seq=meta.sequence.stream,
            num_delivered=meta.num_delivered,
        )
        handled = False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                first = await conn.fetchval(
                    """INSERT INTO worker_consumed (consumer, stream, stream_seq)
                       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
                    self.spec.durable, delivery.stream, delivery.stream_seq,
                )  # fmt: skip
                if first:
                    await self.handler(delivery, conn)
                handled = True
        except Exception as exc:
            trace.get_current_span().record_exception(exc)
            try:
                return await self._failed(msg, delivery, exc, retry_only=handled)
            except Exception:  # NATS trouble: the message comes back after ack_wait
                log.exception("consumer %s: could not settle failed seq %d",
                              self.spec.durable, delivery.stream_seq)  # fmt: skip
            return "retried"
        try:
            await msg.ack_sync()
        except Exception:  # committed already: a redelivery will only be acknowledged
            log.exception("consumer %s: ack of seq %d failed", self.spec.durable,
                          delivery.stream_seq)  # fmt: skip
        return "acked"

    async def _failed(
        self, msg: Msg, d: Delivery, exc: Exception, *, retry_only: bool = False
    ) -> str:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        retry_only = retry_only or isinstance(exc, Unfinished)
        if d.num_delivered >= self.settings.max_deliveries and not retry_only:
            log.error("consumer %s: seq %d failed %d times, dead-lettered: %s",
                      self.spec.durable, d.stream_seq, d.num_delivered, reason)  # fmt: skip
            headers = {
                "Wedsync-Dlq-Consumer": self.spec.durable,
                "Wedsync-Dlq-Stream": d.stream,
                "Wedsync-Dlq-Stream-Seq": str(d.stream_seq),
                "Wedsync-Dlq-Subject": d.subject,
                "Wedsync-Dlq-Deliveries": str(d.num_delivered),
                "Wedsync-Dlq-Error": reason.replace("\r", " ").replace("\n", " "),
                # stored once even if we crash between this publish and the term
                "Nats-Msg-Id": f"{self.spec.durable}:{d.stream}:{d.stream_seq}",
            }
            await self.js.publish(
                dead_letter_subject(self.spec.durable),
                d.data,
                headers=headers,
            )
            await msg.term()
            return "dead"
        delay = retry_delay(d.num_delivered, self.settings)
        log.warning("consumer %s: seq %d failed (attempt %d), retry in %.1fs: %s",
                    self.spec.durable, d.stream_seq, d.num_delivered, delay, reason)  # fmt: skip
        await msg.nak(delay=delay)
        return "retried"
