"""``wedsync cluster``: the production shape on one machine, from the pip-installed binaries.

Three clustered nats-servers with JetStream on loopback ports (wedsync/embedded/cluster.py), an
embedded PostgreSQL, the streams and buckets with ``WEDSYNC_STREAM_REPLICAS`` replicas
(3 unless set), two ``wedsync api`` processes on ports ``PORT`` and ``PORT+1`` and one
process of each worker — each a child kept running as ``wedsync dev`` keeps its own
(wedsync/supervisor.py). Data and development secrets stay in ``DATA_DIR/cluster/``.

Where ``wedsync dev`` is the quickest way to a working system, this is the one to try what
production does: kill a NATS node, restart one API process at a time (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from config.settings import Settings
from runtime.connections import connect, prepare
from wedsync.embedded import EmbeddedError, EmbeddedPostgres, data_dir_lock
from wedsync.embedded.cluster import NatsCluster
from wedsync.supervisor import StartFailed, Supervisor, port_in_use, wait_ready
from workers.registry import WORKERS

#: ``WEDSYNC_STREAM_REPLICAS`` of ``wedsync cluster`` unless set
REPLICAS = 3


async def run_cluster(settings: Settings, *, nodes: int = 3, api_processes: int = 2) -> int:
    started = time.monotonic()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    host, first = settings.server.host, settings.server.port or 8000
    ports = [first + i for i in range(api_processes)]
    if busy := [p for p in ports if port_in_use(host, p)]:
        raise StartFailed(f"port(s) {busy} on {host} already in use; pass --port N")
    if settings.nats.replicas > nodes:
        raise StartFailed(f"WEDSYNC_STREAM_REPLICAS={settings.nats.replicas} > {nodes} nodes")
    root = settings.data_dir.resolve() / "cluster"
    with data_dir_lock(root):
        async with (
            NatsCluster(root / "nats", size=nodes, host=host) as cluster,
            EmbeddedPostgres(root / "postgres") as pg,
        ):
            # the app and workers as the least-privilege role; the superuser migrates
            live = settings.with_services(cluster.url, pg.service_url, pg.url)
            async with connect(live, name="wedsync-cluster") as conns:
                await prepare(conns, live)
            # migrated above: the children need (and get) no owner credentials
            env = {**os.environ, **live.to_env()}
            env.pop("WEDSYNC_MIGRATE_DATABASE_URL", None)
            apis = [
                Supervisor(
                    {**env, "WEDSYNC_PORT": str(p), "WEDSYNC_API_PROCESSES": "1"}, live.dev, stop
                )
                for p in ports
            ]
            workers = Supervisor(env, live.dev, stop)
            everyone = [*apis, workers]
            try:
                procs = [(await s.start("api")).proc for s in apis]
                urls = [f"http://{host}:{p}" for p in ports]
                await asyncio.gather(*(wait_ready(u, procs) for u in urls))
                for name in WORKERS:
                    await workers.start("worker", name)
                for s in everyone:
                    s.watch()
                print(
                    f"WedSync realtime cluster ready in {time.monotonic() - started:.2f}s: "
                    f"API {' '.join(urls)}; NATS {cluster.url} (JetStream, "
                    f"{live.nats.replicas} replicas); PostgreSQL on port {pg.port}; data in {root}",
                    flush=True,
                )
                await stop.wait()
                fatal = [s.fatal for s in everyone if s.fatal]
                if fatal:
                    print(f"wedsync cluster: {fatal[0]}", file=sys.stderr, flush=True)
                    return 1
                return 0
            except RuntimeError as exc:  # a child exited before it was ready
                raise StartFailed(f"{exc}; see the logs above") from None
            finally:
                await asyncio.gather(*(s.close() for s in everyone))


def cluster_env(env: dict[str, str]) -> dict[str, str]:
    """What ``wedsync cluster`` sets unless given: R3, and no embedded single services."""
    out = dict(env)
    out.setdefault("WEDSYNC_STREAM_REPLICAS", str(REPLICAS))
    for name in ("WEDSYNC_NATS_URL", "WEDSYNC_DATABASE_URL"):
        out.pop(name, None)  # this command runs its own
    return out


def main(settings: Settings) -> int:
    """``wedsync cluster`` (its settings from :func:`cluster_env`, with dev secrets)."""
    try:
        return asyncio.run(run_cluster(settings))
    except (StartFailed, EmbeddedError) as exc:  # the reason is the message: no traceback
        print(f"wedsync cluster: {exc}", file=sys.stderr)
        return 1
