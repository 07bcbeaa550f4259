"""The shared worker runner against real JetStream and PostgreSQL, with a test-defined worker."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest
from nats.js.api import ConsumerInfo

from config.settings import WorkerSettings
from runtime.connections import Connections
from runtime.db import Conn
from streams import DEAD_LETTERS, EVENTS, ConsumerSpec, dead_letter_subject, wedding_subject
from tests.kits.world import eventually
from workers.runner import ConsumerRunner, Delivery, retry_delay

pytestmark = pytest.mark.asyncio


def spec_for(subject: str) -> ConsumerSpec:
    return ConsumerSpec(
        durable="test_" + uuid.uuid4().hex[:10], stream=EVENTS.name, filter_subjects=(subject,)
    )


@pytest.fixture
async def effects(conns: Connections) -> str:
    table = "effects_" + uuid.uuid4().hex[:8]
    async with conns.pool.acquire() as c:
        await c.execute(f"CREATE TABLE {table} (seq bigint PRIMARY KEY, body text)")
    return table


async def count(conns: Connections, table: str) -> int:
    async with conns.pool.acquire() as c:
        n: int = await c.fetchval(f"SELECT count(*) FROM {table}")
    return n


async def test_effect_committed_then_acked(
    conns: Connections, effects: str, fast_retries: WorkerSettings
) -> None:
    subject = wedding_subject(uuid.uuid4(), "chat")
    spec = spec_for(subject)
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(d: Delivery, conn: Conn) -> None:
        await conn.execute(f"INSERT INTO {effects} VALUES ($1, $2)", d.stream_seq, d.data.decode())
        entered.set()
        await release.wait()

    ack = await conns.js.publish(subject, b"hello")
    async with ConsumerRunner(conns.js, conns.pool, spec, handler, fast_retries):
        await asyncio.wait_for(entered.wait(), 10)
        # Inside the handler: the effect is not visible and the message is not acked.
        assert await count(conns, effects) == 0
        info = await conns.js.consumer_info(EVENTS.name, spec.durable)
        assert info.num_ack_pending == 1
        release.set()

        async def acked() -> bool:
            i: ConsumerInfo = await conns.js.consumer_info(EVENTS.name, spec.durable)
            return i.num_ack_pending == 0 and i.num_pending == 0

        await eventually(acked)
    async with conns.pool.acquire() as c:
        rows = await c.fetch(f"SELECT seq, body FROM {effects}")
    assert [(r["seq"], r["body"]) for r in rows] == [(ack.seq, "hello")]


async def test_already_committed_message_is_not_applied_twice(
    conns: Connections, effects: str, fast_retries: WorkerSettings
) -> None:
    """A redelivery after commit-but-before-ack (a crash) only acknowledges."""
    subject = wedding_subject(uuid.uuid4(), "chat")
    spec = spec_for(subject)
    calls: list[int] = []

    async def handler(d: Delivery, conn: Conn) -> None:
        calls.append(d.stream_seq)
        await conn.execute(f"INSERT INTO {effects} VALUES ($1, $2)", d.stream_seq, "x")

    first = await conns.js.publish(subject, b"1")
    second = await conns.js.publish(subject, b"2")
    async with conns.pool.acquire() as c:  # as if a previous run committed seq `first`
        await c.execute(
            "INSERT INTO worker_consumed (consumer, stream, stream_seq) VALUES ($1, $2, $3)",
            spec.durable,
            EVENTS.name,
            first.seq,
        )
    async with ConsumerRunner(conns.js, conns.pool, spec, handler, fast_retries):
        await eventually(lambda: _true_if(calls == [second.seq]))

        async def drained() -> bool:
            i: ConsumerInfo = await conns.js.consumer_info(EVENTS.name, spec.durable)
            return i.num_ack_pending == 0 and i.num_pending == 0

        await eventually(drained)
    assert calls == [second.seq]


async def _true_if(value: bool) -> bool:
    return value


async def test_failures_back_off_then_dead_letter(
    conns: Connections, effects: str, fast_retries: WorkerSettings
) -> None:
    subject = wedding_subject(uuid.uuid4(), "chat")
    spec = spec_for(subject)
    seen: list[float] = []

    async def handler(d: Delivery, conn: Conn) -> None:
        await conn.execute(f"INSERT INTO {effects} VALUES ($1, 'partial')", d.stream_seq)
        seen.append(time.monotonic())
        raise RuntimeError("vendor API is down")

    ack = await conns.js.publish(subject, b"poison", headers={"X-Test": "1"})
    dlq_sub = await conns.js.subscribe(dead_letter_subject(spec.durable), stream=DEAD_LETTERS.name)
    try:
        async with ConsumerRunner(conns.js, conns.pool, spec, handler, fast_retries):
            dead = await dlq_sub.next_msg(timeout=15)
    finally:
        await dlq_sub.unsubscribe()

    assert len(seen) == fast_retries.max_deliveries
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # Each redelivery waited at least its delay, and the delays grew.
    assert gaps[0] >= retry_delay(1, fast_retries) * 0.9
    assert gaps[1] >= retry_delay(2, fast_retries) * 0.9
    assert gaps[1] > gaps[0] * 1.4
    assert dead.data == b"poison"
    assert dead.headers is not None
    assert dead.headers["Wedsync-Dlq-Stream-Seq"] == str(ack.seq)
    assert dead.headers["Wedsync-Dlq-Deliveries"] == str(fast_retries.max_deliveries)
    assert "vendor API is down" in dead.headers["Wedsync-Dlq-Error"]
    # Failed attempts rolled back: nothing half-done remains, nothing left pending.
    assert await count(conns, effects) == 0
    info = await conns.js.consumer_info(EVENTS.name, spec.durable)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_deleted_consumer_is_recreated_after_last_commit(
    conns: Connections, effects: str, fast_retries: WorkerSettings
) -> None:
    subject = wedding_subject(uuid.uuid4(), "chat")
    spec = spec_for(subject)
    calls: list[bytes] = []

    async def handler(d: Delivery, conn: Conn) -> None:
        calls.append(d.data)

    await conns.js.publish(subject, b"before")
    async with ConsumerRunner(conns.js, conns.pool, spec, handler, fast_retries):
        await eventually(lambda: _true_if(calls == [b"before"]))
        await conns.js.delete_consumer(EVENTS.name, spec.durable)
        await conns.js.publish(subject, b"after")
        await eventually(lambda: _true_if(len(calls) >= 2), timeout=20)
    assert calls == [b"before", b"after"]
    info = await conns.js.consumer_info(EVENTS.name, spec.durable)
    assert info.num_ack_pending == 0


async def test_stop_finishes_message_in_hand(
    conns: Connections, effects: str, fast_retries: WorkerSettings
) -> None:
    subject = wedding_subject(uuid.uuid4(), "chat")
    spec = spec_for(subject)
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(d: Delivery, conn: Conn) -> None:
        entered.set()
        await release.wait()
        await conn.execute(f"INSERT INTO {effects} VALUES ($1, 'done')", d.stream_seq)

    for i in range(3):
        await conns.js.publish(subject, str(i).encode())
    runner = ConsumerRunner(conns.js, conns.pool, spec, handler, fast_retries)
    await runner.__aenter__()
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 10)
    # The one in hand committed; the other two went back to the stream, unacked.
    assert await count(conns, effects) == 1
    info = await conns.js.consumer_info(EVENTS.name, spec.durable)
    assert info.num_ack_pending + info.num_pending == 2
