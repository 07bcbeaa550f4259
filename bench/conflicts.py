"""Conflicts worker: changes applied per second by one worker, and change-to-event latency.

    python bench/conflicts.py --weddings 50 --members 4 --rate 200 --duration 20
    python bench/conflicts.py --weddings 50 --members 4 --rate 5000 --duration 20  # saturate

Starts embedded NATS + PostgreSQL, `--gateways` API processes and one `wedsync worker
conflicts` process (`--partitions` partitions), creates weddings over the HTTP API, opens
one socket per member, creates `--tasks` tasks per wedding, then sends `--rate` task updates
per second (open loop, random member, each based on the version it last saw). Latency is
from sending the `change` frame to the author receiving the resulting `entity.updated`
event (HdrHistogram). Throughput is entity events applied per second over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets
from hdrh.histogram import HdrHistogram

from bench.system import OPEN_LIMITS, Seat, populate, running_system


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "WEDSYNC_CONFLICT_PARTITIONS": str(args.partitions),
        "WEDSYNC_WS_RATE": "100000",
        "WEDSYNC_WS_BURST": "100000",
    }
    async with running_system(args.gateways, env) as system:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wedsync.cli",
            "worker",
            "conflicts",
            env={**os.environ, **system.settings.to_env(), **OPEN_LIMITS, **env},
        )
        try:
            return await drive(
                args,
                await populate(system, args.weddings, args.members, ("planner", "family")),
                worker.pid,
            )
        finally:
            worker.terminate()
            await worker.wait()


async def drive(args: argparse.Namespace, seats: list[Seat], worker_pid: int) -> dict[str, Any]:
    import psutil

    hist = HdrHistogram(1, 60_000_000, 3)
    sent: dict[str, float] = {}
    versions: dict[tuple[str, str], int] = {}
    applied = 0
    sockets: list[tuple[Seat, Any]] = []
    for seat in seats:
        ws = await websockets.connect(
            seat.ws_url, compression=None, max_size=2**24, subprotocols=seat.subprotocols
        )
        await ws.recv()
        sockets.append((seat, ws))

    async def read(seat: Seat, ws: Any) -> None:
        nonlocal applied
        async for raw in ws:
            if '"entity.' not in raw:
                continue
            data = json.loads(raw)["event"]["data"]
            versions[(seat.wedding, data["entity_id"])] = data["version"]
            t = sent.pop(data["change"]["id"], None)
            if t is not None:
                hist.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
                applied += 1

    readers = [asyncio.create_task(read(s, ws)) for s, ws in sockets]
    by_wedding: dict[str, Any] = {}
    for seat, ws in sockets:
        by_wedding.setdefault(seat.wedding, ws)
    for wedding, ws in by_wedding.items():
        for t in range(args.tasks):
            await ws.send(
                json.dumps(
                    {
                        "type": "change",
                        "id": f"c-{wedding[:8]}-{t}",
                        "entity": "tasks",
                        "entity_id": f"t{t}",
                        "op": "create",
                        "fields": {"title": "task"},
                    }
                )
            )
    deadline = time.monotonic() + 60
    while len(versions) < len(by_wedding) * args.tasks and time.monotonic() < deadline:  # noqa: ASYNC110 - polls counters the readers bump
        await asyncio.sleep(0.05)
    hist.reset()
    applied = 0
    proc = psutil.Process(worker_pid)
    proc.cpu_percent()
    started = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - started) < args.duration:
        due = int(elapsed * args.rate)
        while n < due:
            seat, ws = random.choice(sockets)
            task = f"t{random.randrange(args.tasks)}"
            cid = f"u{n}"
            sent[cid] = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "type": "change",
                        "id": cid,
                        "entity": "tasks",
                        "entity_id": task,
                        "op": "update",
                        "fields": {"title": f"title {n}", "done": n % 2 == 0},
                        "base_version": versions.get((seat.wedding, task), 1),
                    }
                )
            )
            n += 1
        await asyncio.sleep(0.002)
    window = time.perf_counter() - started
    cpu = proc.cpu_percent()
    applied_in_window = applied
    drain_deadline = time.monotonic() + 120
    while sent and time.monotonic() < drain_deadline:  # noqa: ASYNC110 - as above
        await asyncio.sleep(0.05)
    for r in readers:
        r.cancel()
    for _, ws in sockets:
        await ws.close()
    pct = {p: hist.get_value_at_percentile(p) / 1000 for p in (50, 90, 99, 99.9)}
    return {
        "scenario": "conflicts",
        "weddings": args.weddings,
        "members": args.members,
        "rate": args.rate,
        "duration": args.duration,
        "partitions": args.partitions,
        "sent": n,
        "applied_in_window_per_s": round(applied_in_window / window, 1),
        "unapplied_after_drain": len(sent),
        "worker_cpu_percent": cpu,
        "latency_ms": {
            "p50": pct[50],
            "p90": pct[90],
            "p99": pct[99],
            "p99.9": pct[99.9],
            "max": hist.get_max_value() / 1000,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weddings", type=int, default=50)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--gateways", type=int, default=1)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("bench/results/conflicts.json"))
    args = p.parse_args()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
