"""The raw JetStream publish ceiling of one Python process: the yardstick for the gateway.

nats-py publishing acked messages of the gateway's event size to a scratch stream (file
storage, like WEDSYNC_EVENTS) as fast as it can with ``inflight`` publishes outstanding,
for ``seconds``. Run in its own process (`measure` spawns it) so that it has a core's
worth of event loop to itself, as one gateway process would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import nats
from nats.js.api import StorageType, StreamConfig


async def _publish_flat_out(url: str, seconds: float, inflight: int, size: int) -> dict[str, Any]:
    nc = await nats.connect(url, name="bench-ceiling")
    js = nc.jetstream()
    name = "BENCH_CEILING_" + uuid.uuid4().hex[:8].upper()
    subject = f"bench.ceiling.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE))
    payload = b"x" * size
    acked = 0
    deadline = 0.0

    async def worker() -> None:
        # each worker has one publish outstanding: ``inflight`` workers bound the window
        nonlocal acked
        while time.perf_counter() < deadline:
            await js.publish(subject, payload, stream=name)
            acked += 1

    try:
        for _ in range(inflight):  # warm up the connection and the stream's first block
            await js.publish(subject, payload, stream=name)
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    finally:
        await js.delete_stream(name)
        await nc.close()
    return {
        "msgs_per_s": round(acked / elapsed),
        "acked": acked,
        "seconds": round(elapsed, 2),
        "inflight": inflight,
        "payload_bytes": size,
    }


def _child(url: str, seconds: float, inflight: int, size: int) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()  # as the gateway (uvicorn picks uvloop when installed)
    except ImportError:
        pass
    return asyncio.run(_publish_flat_out(url, seconds, inflight, size))


async def measure(
    url: str, seconds: float = 3.0, inflight: int = 256, size: int = 200
) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, _child, url, seconds, inflight, size)
