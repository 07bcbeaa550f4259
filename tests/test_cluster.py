"""Issue 20's acceptance on the production shape: a 3-node NATS cluster (R3 streams and
buckets), PostgreSQL, two `wedsync api` processes and the workers, one system for the module
(bench/faults/cluster.py). Members chat, change tasks and are present the whole time.

- Replicas: a stream and the presence bucket found with one replica (and another
  description) are brought back to three at start, with a log line.
- A NATS node killed (-9): the events stream's leader, with a burst in flight. Nothing
  acknowledged is lost or doubled (the audit of issue 17: every ack delivered once, every
  folded view equals ``GET /state``), members kept sending while it was away (the events
  stream grew), no process restarted, and the node rejoins and catches up.
- A rolling restart of both API processes: every member's socket closes and resumes,
  nothing is missed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bench.faults import Audit, FaultSystem, drill
from bench.faults.cluster import NODE_KILL, ROLLING, ClusterServices
from bench.faults.drill import Pace
from runtime.connections import connect, prepare
from streams.buckets import PRESENCE_BUCKET
from streams.definitions import CHANGES, DEAD_LETTERS
from tests.kits.world import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

PACE = Pace(warmup=2.0, after=3.0, settle_timeout=45.0, rate=4.0, change_every=1.0)
REPLICAS = 3


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultSystem]:
    root = tmp_path_factory.mktemp("cluster")
    services = ClusterServices(root)
    # a stopping API closes its sockets (4000 going away: reconnect) and waits at most 1 s
    env = {"WEDSYNC_STREAM_REPLICAS": str(REPLICAS), "WEDSYNC_SHUTDOWN_TIMEOUT": "1"}
    workers = ("conflicts", "notifications", "presence")
    async with FaultSystem(root, services=services, env=env, workers=workers) as s:
        services.system = s
        yield s


def evidence(system: FaultSystem, audit: Audit) -> str:
    lines = ["", *audit.problems(), ""]
    for c in system.children:
        state = "running" if c.alive else f"EXITED {c.proc.returncode}"
        lines += [f"--- {c.name} (pid {c.pid}, {state}) ---", c.summary()]
    return "\n".join(lines)


async def replicas(system: FaultSystem, stream: str) -> int:
    assert system.nc is not None
    info = await system.nc.jetstream().stream_info(stream)
    assert info.cluster is not None
    return 1 + len(info.cluster.replicas or [])


async def _has(system: FaultSystem, stream: str, count: int) -> bool:
    return await replicas(system, stream) == count


async def test_streams_and_buckets_are_reconciled_to_the_configured_replicas(
    system: FaultSystem, caplog: pytest.LogCaptureFixture
) -> None:
    assert system.nc is not None
    js = system.nc.jetstream()
    for name in (DEAD_LETTERS.name, PRESENCE_BUCKET.stream, CHANGES.name):
        assert await replicas(system, name) == REPLICAS
    # as a release that knew no better (or a single-node start) left them
    for name in (DEAD_LETTERS.name, PRESENCE_BUCKET.stream):
        cfg = (await js.stream_info(name)).config
        await js.update_stream(dataclasses.replace(cfg, num_replicas=1, description="old"))
        await eventually(lambda n=name: _has(system, n, 1))  # type: ignore[misc]
    with caplog.at_level(logging.INFO, logger="streams"):
        async with connect(system.settings, name="test-prepare") as conns:
            await prepare(conns, system.settings)  # what every process does at start
    assert f"updated stream {DEAD_LETTERS.name}" in caplog.text
    assert f"updated bucket {PRESENCE_BUCKET.name}" in caplog.text
    for name in (DEAD_LETTERS.name, PRESENCE_BUCKET.stream):
        assert (await js.stream_info(name)).config.num_replicas == REPLICAS
        await eventually(lambda n=name: _has(system, n, REPLICAS), timeout=30)  # type: ignore[misc]
    # the workers' durable consumers follow their stream's replicas
    owned = system.settings.conflicts.owned()
    consumer = await js.consumer_info(CHANGES.name, f"conflicts-p{owned[0]}")
    assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == REPLICAS - 1


async def test_a_nats_node_killed_loses_nothing_and_catches_up(system: FaultSystem) -> None:
    services = system.services
    assert isinstance(services, ClusterServices)
    started = {c.name: c.pid for c in system.children}
    audit = await drill(NODE_KILL, services, system.urls, system.settings.auth, system, pace=PACE)
    assert audit.messages_sent >= 50 and audit.changes_sent >= 15, audit.as_dict()
    assert audit.problems() == [], evidence(system, audit)
    assert {c.name: c.pid for c in system.children} == started  # nobody restarted
    # members kept sending while the leader was away: the stream grew, on the other two
    failover = services.failover
    assert failover is not None and failover.done() and not failover.cancelled()
    grew = services.seq_at_start - services.seq_at_stop
    assert grew > 10, f"{grew} events stored with a node away (leader after {failover.result()} s)"
    # and presence went on: heartbeats and members' records written to the R3 bucket
    assert services.presence_at_start > services.presence_at_stop, vars(services)
    assert services.stopped is not None
    await services.caught_up(services.stopped)


async def test_a_rolling_restart_of_the_apis_misses_nothing(system: FaultSystem) -> None:
    services = system.services
    assert isinstance(services, ClusterServices)
    before = {c.name: c.pid for c in system.children if c.name.startswith("api-")}
    audit = await drill(ROLLING, services, system.urls, system.settings.auth, system, pace=PACE)
    after = {c.name: c.pid for c in system.children if c.name.startswith("api-")}
    assert set(after) == set(before) and all(after[n] != before[n] for n in before), (before, after)
    assert audit.messages_sent >= 50 and audit.changes_sent >= 15, audit.as_dict()
    assert audit.problems() == [], evidence(system, audit)
