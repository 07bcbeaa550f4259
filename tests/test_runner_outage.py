"""The shared worker runner through real outages: its own PostgreSQL and nats-server,
stopped for longer than every retry delay together, then started again on the same port
and data. Nothing is dead-lettered, nothing counted, the loop is still running, and each
message's effect is committed once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
import pytest_asyncio
from nats.js.api import ConsumerInfo

from config.settings import WorkerSettings
from runtime.connections import Connections
from runtime.db import Conn, migrate
from streams import DEAD_LETTERS, EVENTS, ConsumerSpec, ensure_streams, wedding_subject
from tests.kits.world import eventually
from wedsync.embedded import EmbeddedNats, EmbeddedPostgres
from workers.outage import Outages
from workers.runner import ConsumerRunner, Delivery

OUTAGE = 6.0  # seconds: longer than the retry delays of `fast_retries` together (~1.4 s)


@pytest_asyncio.fixture(scope="module")
async def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    async with EmbeddedPostgres(tmp_path_factory.mktemp("outage-pg")) as pg:
        conn = await asyncpg.connect(pg.url)
        try:
            await migrate(conn)
            await conn.execute("CREATE TABLE effects (seq bigint PRIMARY KEY, body text)")
        finally:
            await conn.close()
        yield pg


@pytest_asyncio.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(tmp_path / "nats") as n:
        yield n


def spec(subject: str) -> ConsumerSpec:
    return ConsumerSpec(
        durable="outage_" + uuid.uuid4().hex[:8], stream=EVENTS.name, filter_subjects=(subject,)
    )


async def effects(pool: asyncpg.Pool, seq: int) -> list[str]:
    async with pool.acquire() as c:
        return [r["body"] for r in await c.fetch("SELECT body FROM effects WHERE seq = $1", seq)]


async def handler(d: Delivery, conn: Conn) -> None:
    await conn.execute("INSERT INTO effects VALUES ($1, $2)", d.stream_seq, d.data.decode())


async def test_postgres_outage_is_waited_out_not_dead_lettered(
    own_postgres: EmbeddedPostgres, conns: Connections, fast_retries: WorkerSettings
) -> None:
    js = conns.js
    subject = wedding_subject(uuid.uuid4(), "chat")
    s = spec(subject)
    dlq = await js.subscribe(f"wedsync.dlq.{s.durable}", stream=DEAD_LETTERS.name)
    pool = await asyncpg.create_pool(own_postgres.url, min_size=1, max_size=4)
    outages = Outages()
    try:
        async with ConsumerRunner(js, pool, s, handler, fast_retries, outages=outages) as r:
            await own_postgres.stop()
            ack = await js.publish(subject, b"during the outage")
            await eventually(lambda: outages.in_outage, timeout=10)  # it noticed, and waits
            await asyncio.sleep(OUTAGE)  # the outage itself
            assert r._task is not None and not r._task.done()
            await own_postgres.start()
            await eventually(lambda: effects(pool, ack.seq), timeout=30)
            assert await effects(pool, ack.seq) == ["during the outage"]
            await eventually(lambda: not outages.in_outage)

            async def settled() -> bool:
                i: ConsumerInfo = await js.consumer_info(EVENTS.name, s.durable)
                return i.num_ack_pending == 0 and i.num_pending == 0

            await eventually(settled)
        async with pool.acquire() as c:
            counted = await c.fetchval(
                "SELECT count(*) FROM worker_failures WHERE consumer = $1", s.durable
            )
        assert counted == 0
        with pytest.raises(nats.errors.TimeoutError):
            await dlq.next_msg(timeout=0.5)
    finally:
        await dlq.unsubscribe()
        await pool.close()


async def test_nats_outage_keeps_the_loop_running(
    own_nats: EmbeddedNats, own_postgres: EmbeddedPostgres, fast_retries: WorkerSettings
) -> None:
    nc = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_streams(js, replicas=1)
    pool = await asyncpg.create_pool(own_postgres.url, min_size=1, max_size=4)
    subject = wedding_subject(uuid.uuid4(), "chat")
    outages = Outages()
    try:
        runner = ConsumerRunner(js, pool, spec(subject), handler, fast_retries, outages=outages)
        async with runner as r:
            before = await js.publish(subject, b"before")
            await eventually(lambda: effects(pool, before.seq))
            await own_nats.stop()
            await eventually(lambda: outages.in_outage, timeout=15)
            await asyncio.sleep(OUTAGE)  # the outage itself: it was fatal after ~6 s
            assert r._task is not None and not r._task.done()
            await own_nats.start()  # same port, same store
            await eventually(lambda: nc.is_connected, timeout=15)
            after = await js.publish(subject, b"after")
            await eventually(lambda: effects(pool, after.seq), timeout=30)
            assert await effects(pool, after.seq) == ["after"]
            assert not r._task.done()
    finally:
        await pool.close()
        with contextlib.suppress(Exception):
            await nc.close()
