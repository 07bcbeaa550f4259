"""Observability end to end: one trace from a WebSocket change to the email it caused, across
two gateway processes and the conflicts and notifications worker processes (their real OTLP
exporters, received by an in-memory collector), and the metrics every process reports
through one ``GET /metrics``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from config.logging import JsonFormatter, TraceIds
from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import EVENTS
from tests.kits.notifykit import add_member, notifications_consumer_exists
from tests.kits.otlp import Collector, ReceivedSpan, collector
from tests.kits.providers import HttpProviders, SmtpServer, provider_env, providers
from tests.kits.statekit import Member, join_member
from tests.kits.world import World, eventually, recv_type, send, worker_process

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP span kinds


@pytest_asyncio.fixture(scope="module")
async def otel() -> AsyncIterator[Collector]:
    async with collector() as c:
        yield c


@pytest.fixture(scope="module")
def gateway_env(otel: Collector) -> dict[str, str]:
    return otel.env()


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[SmtpServer, HttpProviders]]:
    async with providers() as found:
        yield found


async def _drop_notifications_consumer(conns: Connections) -> None:
    """A fresh ``notifications`` durable starts at the stream's end: this module's events only."""
    with contextlib.suppress(NotFoundError):
        await conns.js.delete_consumer(EVENTS.name, "notifications")


@pytest_asyncio.fixture(scope="module")
async def workers(
    settings: Settings,
    conns: Connections,
    otel: Collector,
    servers: tuple[SmtpServer, HttpProviders],
) -> AsyncIterator[None]:
    env = {**otel.env(), **provider_env(*servers)}
    await _drop_notifications_consumer(conns)
    async with (
        worker_process(settings, "conflicts", env),
        worker_process(settings, "notifications", env),
    ):
        await eventually(lambda: notifications_consumer_exists(conns), timeout=30)
        yield
    await _drop_notifications_consumer(conns)


async def _vendor_timeline_item(world: World, gateway: str) -> tuple[Member, str, str]:
    """The planner creates a vendor (with a member) and a timeline item for it: the vendor
    is emailed. (planner's socket, the item's change id, the vendor's address)"""
    address = f"dj-{uuid.uuid4().hex[:6]}@example.org"
    vendor = await add_member(world, "vendor", email=address)
    planner = await add_member(world, "planner")
    m = await join_member(world, gateway, planner)
    await m.change(
        "vendors", "v-dj", "create", {"name": "DJ Sam", "category": "music", "member": vendor}
    )
    cid = await m.change(
        "timeline",
        "t-dance",
        "create",
        {
            "title": "First dance",
            "start": "2027-06-12T20:00:00Z",
            "end": "2027-06-12T20:15:00Z",
            "vendor_id": "v-dj",
        },
    )
    return m, cid, address


def _complete(spans: list[ReceivedSpan], leaf: str) -> list[ReceivedSpan] | None:
    """The trace once it holds ``leaf`` and the parent of every span."""
    ids = {s.span_id for s in spans}
    if any(s.name == leaf for s in spans) and all(
        not s.parent_id or s.parent_id in ids for s in spans
    ):
        return spans
    return None


def _parent(spans: list[ReceivedSpan], child: ReceivedSpan) -> ReceivedSpan:
    found = [s for s in spans if s.span_id == child.parent_id]
    assert found, f"{child.name} ({child.service}): parent {child.parent_id} not in the trace"
    return found[0]


async def test_one_trace_from_a_websocket_change_to_the_email_it_caused(
    world: World,
    gateways: list[str],
    workers: None,
    otel: Collector,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, _ = servers
    m, cid, address = await _vendor_timeline_item(world, gateways[0])
    try:
        await eventually(lambda: smtp.to(address), timeout=30)
        roots = await eventually(
            lambda: [
                s for s in otel.named("ws change") if s.attributes.get("wedsync.frame_id") == cid
            ]
        )
        assert len(roots) == 1
        root = roots[0]
        # spans are exported as they end (a child before its parent): wait for all of them
        spans = await eventually(
            lambda: _complete(otel.trace(root.trace_id), "smtp send"), timeout=20
        )
    finally:
        await m.ws.close()

    # the chain, child to parent, each link in the process that did the work
    send_span = next(s for s in spans if s.name == "smtp send")
    deliver = _parent(spans, send_span)
    planned = _parent(spans, deliver)
    event_pub = _parent(spans, planned)
    applied = _parent(spans, event_pub)
    change_pub = _parent(spans, applied)
    assert _parent(spans, change_pub) == root
    chain = [
        (s.name, s.service, s.kind)
        for s in (send_span, deliver, planned, event_pub, applied, change_pub, root)
    ]
    assert chain[0] == ("smtp send", "wedsync-notifications", CLIENT)
    assert chain[1] == ("deliver email", "wedsync-notifications", 1)  # internal
    assert chain[2] == ("process notifications", "wedsync-notifications", CONSUMER)
    assert chain[3] == ("publish WEDSYNC_EVENTS", "wedsync-conflicts", PRODUCER)
    assert chain[4][0].startswith("process conflicts-p") and chain[4][1:] == (
        "wedsync-conflicts",
        CONSUMER,
    )
    assert chain[5] == ("publish WEDSYNC_CHANGES", "wedsync-api", PRODUCER)
    assert chain[6] == ("ws change", "wedsync-api", SERVER)
    assert root.parent_id == ""
    assert root.attributes["wedsync.wedding_id"] == world.wedding

    # PostgreSQL queries of the workers' transactions are in the same trace, and every span
    # of the trace hangs off another of it (no broken links across processes)
    queries = [
        s
        for s in spans
        if (s.kind == CLIENT and s.attributes.get("db.system") == "postgresql")
        or s.attributes.get("db.system.name") == "postgresql"
    ]
    assert {_parent(spans, q).name for q in queries} >= {"process notifications", chain[4][0]}
    for s in spans:
        if s is not root:
            _parent(spans, s)
    assert len({s.instance for s in spans}) == 3  # one gateway, two workers


async def test_http_requests_are_traced_and_logs_carry_the_ids(
    world: World, otel: Collector
) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}", headers=world.auth(world.couple))
    assert r.status_code == 200

    def served(route: str) -> list[ReceivedSpan]:
        return [
            s
            for s in otel.spans
            if s.kind == SERVER
            and s.service == "wedsync-api"
            and s.attributes.get("http.route") == route
        ]

    found = await eventually(lambda: served("/api/weddings/{wedding_id}"))
    assert found[0].name == "GET /api/weddings/{wedding_id}"  # the route: no ids in names
    assert found[0].attributes.get("http.status_code") == 200

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceIds())
    logger = logging.getLogger("tests.telemetry.logs")
    logger.addHandler(handler)
    try:
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("work") as span:
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside


def _families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _total(fam: Metric, suffix: str = "", **labels: str) -> float:
    return sum(
        s.value
        for s in fam.samples
        if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_of_every_process_in_one_scrape(
    world: World,
    gateways: list[str],
    workers: None,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, _ = servers
    m, _cid, address = await _vendor_timeline_item(world, gateways[0])
    listener = await join_member(world, gateways[1], world.couple)
    try:
        for i in range(20):
            await send(m.ws, type="message", id=f"metric-{i}", channel="chat", data={"i": i})
            await recv_type(m.ws, "ack")
        for _ in range(20):
            await recv_type(listener.ws, "event")
        await eventually(lambda: smtp.to(address), timeout=30)

        async def scraped() -> dict[str, Metric] | None:
            async with httpx.AsyncClient(base_url=gateways[0]) as c:
                scraper = {"Authorization": f"Bearer {world.settings.auth.metrics_token}"}
                r = await c.get("/metrics", headers=scraper)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            fams = _families(r.text)
            sends = fams.get("wedsync_notification_sends")
            lag = fams.get("wedsync_consumer_lag")
            ready = (
                sends
                and _total(sends, "_total", channel="email", result="sent") >= 1
                and lag
                and {s.labels["consumer"] for s in lag.samples} >= {"notifications", "conflicts-p0"}
            )
            return fams if ready else None

        fams = await eventually(scraped, timeout=30)
    finally:
        await m.ws.close()
        await listener.ws.close()

    processes = {s.labels["process"] for f in fams.values() for s in f.samples}
    roles = sorted(p.rsplit("-", 1)[0] for p in processes)
    assert roles.count("api") == 2 and "conflicts" in roles and "notifications" in roles

    assert _total(fams["wedsync_ws_connections"]) >= 2  # both sockets were open
    assert _total(fams["wedsync_ws_frames_in"], "_total") >= 20 + 2  # messages and changes
    assert _total(fams["wedsync_ws_frames_out"], "_total") >= 20 + 20  # acks and events
    assert _total(fams["wedsync_events_published"], "_total") >= 22
    assert _total(fams["wedsync_events_delivered"], "_total") >= 20
    latency = fams["wedsync_event_delivery_latency_seconds"]
    # sampled (at most one event per 5 ms per process): some, never more than the events
    assert 1 <= _total(latency, "_count") <= _total(fams["wedsync_events_delivered"], "_total")
    assert 0 < _total(latency, "_sum") / _total(latency, "_count") < 5  # seconds: plausible
    pauses = fams["wedsync_gc_pause_seconds"]  # every collection of every process
    bounds = {s.labels["le"] for s in pauses.samples if s.name.endswith("_bucket")}
    assert {"0.001", "0.01", "0.1"} <= bounds  # millisecond buckets, not the SDK's 0-5 s one
    assert _total(fams["wedsync_presence_entries"]) >= 2
    pool = fams["wedsync_db_pool_connections"]
    for p in processes:
        assert _total(pool, process=p, state="in_use") + _total(pool, process=p, state="idle") >= 1
    assert (
        _total(fams["wedsync_worker_messages"], "_total", consumer="notifications", result="acked")
        >= 1
    )
    assert all(s.value >= 0 for s in fams["wedsync_consumer_lag"].samples)
