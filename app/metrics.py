"""``GET /metrics``: the whole system's metrics in one Prometheus scrape.

Every process (each API process and each worker) answers a core-NATS request on
``wedsync.metrics.scrape`` with its own registry (config/telemetry.py). The API process that
serves the scrape gathers the answers for ``WEDSYNC_METRICS_GATHER`` seconds and merges
them, each sample labelled with the ``process`` (role-pid) it came from; so one scrape
target covers N API processes behind one port and every worker, whichever answers.

Also here: the readings that belong to no single process. JetStream consumer lag is read
from the server by each API process (so a dead worker's backlog still shows), and the
database pool gauge of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import asyncpg
from litestar import MediaType, Response, get
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.errors import Unauthorized
from app.services import Services
from config.settings import AuthSettings, Settings
from config.telemetry import Telemetry
from runtime import tasks
from runtime.connections import Connections
from streams.definitions import (
    DOCUMENTS_CONSUMER,
    NOTIFICATIONS_CONSUMER,
    conflicts_consumer,
)
from streams.subjects import METRICS_SCRAPE

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)

PROCESS_HEADER = "Wedsync-Process"


class MetricsResponder:
    """``async with MetricsResponder(nc, telemetry):`` this process answers scrapes."""

    def __init__(self, nc: NATS, telemetry: Telemetry) -> None:
        self.nc = nc
        self.telemetry = telemetry
        self._sub: Subscription | None = None

    async def __aenter__(self) -> MetricsResponder:
        self._sub = await self.nc.subscribe(METRICS_SCRAPE, cb=self._answer)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        text = self.telemetry.prometheus()
        await self.nc.publish(msg.reply, text, headers={PROCESS_HEADER: self.telemetry.process})


async def gather(nc: NATS, window: float) -> list[tuple[str, bytes]]:
    """(process, its exposition) of every process that answers within ``window`` seconds."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    parts: list[tuple[str, bytes]] = []
    try:
        await nc.publish(METRICS_SCRAPE, b"", reply=inbox)
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except (NatsTimeoutError, TimeoutError):
                break
            parts.append(((msg.headers or {}).get(PROCESS_HEADER, "unknown"), msg.data))
    finally:
        await sub.unsubscribe()
    return parts


class _Families:
    """A collector of already-built metric families (for ``generate_latest``)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge(parts: list[tuple[str, bytes]]) -> bytes:
    """One exposition from many: samples keep their labels plus ``process``."""
    merged: dict[str, Metric] = {}
    for process, text in sorted(parts):
        for fam in text_string_to_metric_families(text.decode()):
            into = merged.get(fam.name)
            if into is None:
                into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            into.samples.extend(
                Sample(s.name, {**s.labels, "process": process}, s.value, s.timestamp)
                for s in fam.samples
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged.values()))
    return generate_latest(registry)


async def require_metrics_token(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard of ``/metrics``: 401 unless ``Authorization: Bearer`` carries the metrics token
    (``WEDSYNC_METRICS_TOKEN``) or the admin token, compared in constant time. The scrape
    names every wedding id with a backlog and every process: not for the public."""
    auth: AuthSettings = Services.of(connection.app.state).settings.auth
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing bearer token (WEDSYNC_METRICS_TOKEN or the admin token)")
    # both compared, always: the time taken does not tell which one exists
    tokens = [t for t in (auth.metrics_token, auth.admin_token) if t]
    ok = [hmac.compare_digest(given, t.encode()) for t in tokens]
    if not any(ok):
        raise Unauthorized("wrong metrics token")


@get("/metrics", media_type=MediaType.TEXT, include_in_schema=False, guards=[require_metrics_token])
async def metrics_endpoint(conns: Connections, settings: Settings) -> Response[bytes]:
    """Prometheus text exposition of every process of the system."""
    parts = await gather(conns.nc, settings.telemetry.gather)
    return Response(merge(parts), media_type="text/plain; version=0.0.4; charset=utf-8")


# -- readings -------------------------------------------------------------------------------


def watch_pool(pool: asyncpg.Pool) -> None:
    """Connections of this process's PostgreSQL pool, by state (in_use, idle), and its max."""

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        size, idle = pool.get_size(), pool.get_idle_size()
        yield Observation(size - idle, {"state": "in_use"})
        yield Observation(idle, {"state": "idle"})
        yield Observation(pool.get_max_size() - size, {"state": "unopened"})

    meter.create_observable_gauge(
        "wedsync.db.pool.connections",
        [observe],
        unit="{connection}",
        description="PostgreSQL pool connections of this process by state",
    )


def worker_consumers(settings: Settings) -> list[tuple[str, str]]:
    """(stream, durable) of every worker consumer this build declares."""
    specs = [conflicts_consumer(p) for p in range(settings.conflicts.partitions)]
    specs += [NOTIFICATIONS_CONSUMER, DOCUMENTS_CONSUMER]
    return [(s.stream, s.durable) for s in specs]


class ConsumerLag(tasks.Background):
    """Reads every worker consumer's backlog from JetStream every ``every`` seconds:
    ``wedsync.consumer.lag`` (not yet delivered) and ``.ack_pending`` (delivered, unacked)."""

    name = "consumer-lag"

    def __init__(self, js: JetStreamContext, consumers: list[tuple[str, str]], every: float):
        self.js = js
        self.consumers = consumers
        self.every = every
        self.readings: dict[tuple[str, str], tuple[int, int]] = {}
        meter.create_observable_gauge(
            "wedsync.consumer.lag",
            [self._lag],
            unit="{message}",
            description="Messages of the stream a worker consumer has yet to receive",
        )
        meter.create_observable_gauge(
            "wedsync.consumer.ack_pending",
            [self._pending],
            unit="{message}",
            description="Messages delivered to a worker consumer and not yet acknowledged",
        )

    def _lag(self, _: CallbackOptions) -> Iterable[Observation]:
        for (stream, durable), (lag, _pending) in self.readings.items():
            yield Observation(lag, {"stream": stream, "consumer": durable})

    def _pending(self, _: CallbackOptions) -> Iterable[Observation]:
        for (stream, durable), (_lag, pending) in self.readings.items():
            yield Observation(pending, {"stream": stream, "consumer": durable})

    async def read(self) -> None:
        for stream, durable in self.consumers:
            try:
                info = await self.js.consumer_info(stream, durable)
            except NotFoundError:
                self.readings.pop((stream, durable), None)  # that worker never ran
                continue
            self.readings[(stream, durable)] = (info.num_pending or 0, info.num_ack_pending or 0)

    async def run(self) -> None:
        while True:
            try:
                await self.read()
            except Exception as exc:  # NATS trouble: keep the last readings
                log.warning("consumer lag not read: %r", exc)
            await asyncio.sleep(self.every)
