"""The production shape's faults (issue 20): one node of a 3-node NATS cluster killed, and a
rolling restart of the API processes, drilled like the single-server outages (drill.py).

``ClusterServices`` is a :class:`~wedsync.embedded.cluster.NatsCluster` and a PostgreSQL of
our own. Its ``nats`` outage stops the node that leads the events stream (the worst one to
lose: every publish goes through it) and starts it again on the same ports and data; its
``api`` outage is a rolling restart of a :class:`~bench.faults.system.FaultSystem`'s API
processes: the first stopped and started again (ready) at once, the last stopped for the
outage and started at its end — never all down at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client as NATS

from bench.faults.services import Outage
from streams.buckets import PRESENCE_BUCKET, BucketSpec
from streams.definitions import EVENTS, STREAMS
from wedsync.embedded import EmbeddedPostgres
from wedsync.embedded.cluster import NatsCluster
from wedsync.embedded.process import free_port

# long enough for the survivors to elect new stream leaders (nats-server's raft election
# timeout is 4-9 s) and take traffic for a while
NODE_KILL = Outage("nats-node-kill", "nats", "kill", 12.0, "NATS leader of 3 SIGKILL")
ROLLING = Outage("api-rolling-restart", "api", "term", 2.0, "API rolling restart")
CLUSTER_ACCEPTANCE = (NODE_KILL, ROLLING)
CLUSTER_ENV = {"WEDSYNC_STREAM_REPLICAS": "3"}
CLUSTER_WORKERS = ("conflicts", "notifications", "presence")


class ClusterServices:
    """``async with ClusterServices(dir) as s:`` — ``s.nats_url`` names every node."""

    def __init__(self, root: Path, *, nodes: int = 3) -> None:
        self.cluster = NatsCluster(root / "nats", size=nodes)
        self.postgres = EmbeddedPostgres(root / "postgres", port=free_port())
        self.system: Any = None  # the FaultSystem whose APIs a rolling restart restarts
        self.stopped: str | None = None  # the node (or API process) taken away
        self.seq_at_stop = self.seq_at_start = 0  # events stream head when it went / came
        self.presence_at_stop = self.presence_at_start = 0  # presence bucket writes, likewise
        self.failover: asyncio.Task[float] | None = None  # seconds until a new leader

    @property
    def nats_url(self) -> str:
        return self.cluster.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def can(self, service: str, how: str) -> bool:
        return (service, how) in {("nats", "kill"), ("nats", "term"), ("api", "term")}

    async def _nc(self) -> NATS:
        # the killed node is in the list: connecting past it is expected, not an error
        return await nats.connect(
            self.nats_url.split(","), name="fault-drill-cluster", error_cb=_quiet
        )

    async def leader(self, stream: str) -> str:
        nc = await self._nc()
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None and info.cluster.leader is not None
            return info.cluster.leader
        finally:
            await nc.close()

    async def head(self, stream: str = EVENTS.name) -> int:
        nc = await self._nc()
        try:
            return int((await nc.jetstream().stream_info(stream)).state.last_seq)
        finally:
            await nc.close()

    async def stop(self, service: str, how: str) -> None:
        if service == "api":
            apis = [c.name for c in self.system.children if c.name.startswith("api-")]
            for name in apis[:-1]:
                await self.system.stop_child(name)
                await self.system.start_child(name)
            self.stopped = apis[-1]
            await self.system.stop_child(self.stopped)
            return
        self.seq_at_stop = await self.head()
        self.presence_at_stop = await self.head(PRESENCE_BUCKET.stream)
        self.stopped = await self.leader(EVENTS.name)
        sig = signal.SIGKILL if how == "kill" else signal.SIGTERM
        await self.cluster.stop_node(self.stopped, sig)
        self.failover = asyncio.create_task(self._new_leader(self.stopped, time.monotonic()))

    async def _new_leader(self, old: str, since: float) -> float:
        while True:
            with contextlib.suppress(Exception):
                if await asyncio.wait_for(self.leader(EVENTS.name), 2) != old:
                    return round(time.monotonic() - since, 2)
            await asyncio.sleep(0.1)

    async def start(self, service: str) -> None:
        assert self.stopped is not None
        if service == "api":
            await self.system.start_child(self.stopped)
            return
        self.seq_at_start = await self.head()  # what was stored with the node away
        self.presence_at_start = await self.head(PRESENCE_BUCKET.stream)
        if self.failover is not None and not self.failover.done():
            self.failover.cancel()
        await self.cluster.start_node(self.stopped)

    async def caught_up(self, node: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until ``node`` is a current replica (no lag) of every stream and bucket;
        each one's replica view then."""
        names = [s.name for s in STREAMS] + [b.stream for b in _BUCKETS]
        deadline = time.monotonic() + timeout
        nc = await self._nc()
        try:
            js = nc.jetstream()
            while True:
                views: dict[str, Any] = {}
                for name in names:
                    with contextlib.suppress(Exception):
                        info = await js.stream_info(name)
                        assert info.cluster is not None
                        peers = {p.name: p for p in info.cluster.replicas or []}
                        me = peers.get(node)
                        views[name] = (info.cluster.leader, me)
                done = len(views) == len(names) and all(
                    leader == node
                    or (me is not None and me.current and not me.offline and not me.lag)
                    for leader, me in views.values()
                )
                if done:
                    return views
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node} did not catch up: {views}")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def __aenter__(self) -> ClusterServices:
        await self.cluster.start()
        try:
            await self.postgres.start()
        except BaseException:
            await self.cluster.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.postgres.stop()
        finally:
            await self.cluster.stop()


_BUCKETS: tuple[BucketSpec, ...] = (PRESENCE_BUCKET,)


async def _quiet(exc: Exception) -> None:
    """A node of the cluster away: the client tries the next one."""
