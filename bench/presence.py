"""Presence propagation: time from a member's `presence` frame to each other member's diff.

    python bench/presence.py --users 1000 --room 10 --rate 200 --duration 20
    python bench/presence.py --users 10000 --room 10 --rate 200 --duration 20 --loaders 3

Starts embedded NATS + PostgreSQL and `--gateways` API processes, creates users/rooms over
the HTTP API, holds one WebSocket per user from `--loaders` load processes, then sends
`--rate` presence updates per second (random members; the location carries the send time)
and records, for every other member of the room who receives the diff, the latency in an
HdrHistogram. Same machine, same clock. Writes a JSON result file and a PNG beside it
(latency percentiles, receipts per second); also `python -m bench presence`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hdrh.histogram import HdrHistogram

from bench.report import Figure, write
from bench.stats import Timeline
from bench.system import Seat, populate, raise_fd_limit, running_system


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # microseconds, up to a minute


async def _load(
    seats: list[Seat], pipe: Connection, rate: float, duration: float, pick: str
) -> None:
    import websockets

    hist = new_histogram()
    timeline = Timeline(time.time())  # re-based at "go": the loaders start together
    sockets: list[Any] = []
    sem = asyncio.Semaphore(64)
    received = 0
    by_second: dict[int, HdrHistogram] = {}  # latency per second since "go"
    failures: list[str] = []

    async def open_one(seat: Seat) -> None:
        async with sem:
            for attempt in range(5):
                try:
                    ws = await websockets.connect(
                        seat.ws_url,
                        compression=None,
                        max_size=2**24,
                        open_timeout=120,
                        subprotocols=seat.subprotocols,
                    )
                    await ws.recv()  # welcome
                    break
                except Exception as exc:
                    failures.append(repr(exc)[:200])
                    await asyncio.sleep(0.5 * 2**attempt * random.random())
            else:
                return
        sockets.append(ws)

    async def read(ws: Any) -> None:
        nonlocal received
        try:
            async for raw in ws:
                if '"presence_diff"' not in raw or '"t:' not in raw:
                    continue
                now = time.time()
                for user in json.loads(raw)["updates"]:
                    for c in user["connections"]:
                        loc = c.get("location") or ""
                        if loc.startswith("t:"):
                            us = max(1, int((now - float(loc[2:])) * 1e6))
                            hist.record_value(us)
                            second = int(now - timeline.epoch)
                            if second not in by_second:
                                by_second[second] = new_histogram()
                            by_second[second].record_value(us)
                            received += 1
                            timeline.add("diffs received", now=now)
        except Exception:
            return

    started = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in seats))
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    pipe.send(
        ("connected", time.perf_counter() - started, len(sockets), failures[:5], len(failures))
    )
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "go"
    timeline.epoch = time.time()
    sent = 0
    interval = 1.0 / rate if rate > 0 else duration
    t0 = time.perf_counter()
    next_at = t0
    order: list[Any] = []
    while time.perf_counter() - t0 < duration:
        if pick == "random":  # ~5% of updates then wait out a write window, by design
            ws = random.choice(sockets)
        else:  # every socket once per round, in a new order each round
            if not order:
                order = random.sample(sockets, len(sockets))
            ws = order.pop()
        frame = json.dumps({"type": "presence", "location": f"t:{time.time():.6f}"})
        try:
            await ws.send(frame)
            sent += 1
            timeline.add("updates sent")
        except Exception:
            pass
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.sleep(1.0)  # in-flight diffs
    for t in readers:
        t.cancel()
    seconds = {k: h.encode() for k, h in by_second.items() if k >= 0}
    pipe.send(("done", sent, received, hist.encode(), timeline.series, seconds))
    for ws in sockets:
        await ws.close()


def loader_main(
    seats: list[Seat], pipe: Connection, rate: float, duration: float, pick: str
) -> None:
    raise_fd_limit()
    asyncio.run(_load(seats, pipe, rate, duration, pick))


def percentiles(hist: HdrHistogram) -> dict[str, float]:
    out = {f"p{p:g}_ms": hist.get_value_at_percentile(p) / 1000 for p in (50, 90, 99, 99.9)}
    out["max_ms"] = hist.get_max_value() / 1000
    out["mean_ms"] = hist.get_mean_value() / 1000
    return out


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], Figure]:
    env = {"WEDSYNC_PRESENCE_BATCH": str(args.batch)}
    async with running_system(args.gateways, env) as system:
        t = time.perf_counter()
        seats = await populate(system, args.users // args.room, args.room, ("planner", "family"))
        print(f"populated {len(seats)} members in {time.perf_counter() - t:.1f}s", flush=True)
        rss_before = system.gateway_rss()
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        for i in range(args.loaders):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=loader_main,
                daemon=True,
                args=(
                    seats[i :: args.loaders],
                    child,
                    args.rate / args.loaders,
                    args.duration,
                    args.pick,
                ),
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        loop = asyncio.get_running_loop()
        reports = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        connect_times = [r[1] for r in reports]
        opened = sum(r[2] for r in reports)
        retries = sum(r[4] for r in reports)
        for r in reports:
            for failure in r[3]:
                print("connect retry:", failure, flush=True)
        rss_connected = system.gateway_rss()
        print(
            f"{opened}/{len(seats)} sockets open in {max(connect_times):.1f}s "
            f"({retries} retried); "
            f"gateway RSS {rss_connected / 2**20:.0f} MiB",
            flush=True,
        )
        for pipe in pipes:
            pipe.send("go")
        hist = new_histogram()
        timeline = Timeline(0.0)
        sent = received = 0
        by_second: dict[int, HdrHistogram] = {}
        for pipe in pipes:
            _, s, r, encoded, series, seconds = await loop.run_in_executor(None, pipe.recv)
            sent += s
            received += r
            hist.decode_and_add(encoded)
            timeline.merge(series)
            for k, blob in seconds.items():
                by_second.setdefault(k, new_histogram()).decode_and_add(blob)
        for proc in procs:
            proc.join(30)
    result = {
        "scenario": "presence",
        "users": len(seats),
        "room": args.room,
        "gateways": args.gateways,
        "loaders": args.loaders,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "batch_s": args.batch,
        "updates_sent": sent,
        "diffs_received": received,
        "expected_receipts": sent * (args.room - 1),
        "connect_s": max(connect_times),
        "sockets_open": opened,
        "connect_retries": retries,
        "gateway_rss_mib_idle_before": rss_before / 2**20,
        "gateway_rss_mib_connected": rss_connected / 2**20,
        "pick": args.pick,
        "latency": percentiles(hist),
        # the tails second by second (a transient shows here, not in the run's p99)
        "p99_per_second_ms": [
            round(by_second[k].get_value_at_percentile(99) / 1000, 1) if k in by_second else 0.0
            for k in range(max(by_second, default=-1) + 1)
        ],
        "per_second": timeline.series,
    }
    figure = Figure(
        f"presence: {len(seats)} users, rooms of {args.room}, {args.rate:g} updates/s",
        latency={"presence frame -> each member's diff": hist},
        timeline={k: [float(v) for v in vs] for k, vs in timeline.series.items()},
        timeline_xlabel="seconds since the updates started",
    )
    return result, figure


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--room", type=int, default=10, help="members per wedding room")
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--loaders", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200, help="presence updates per second")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--batch", type=float, default=0.05, help="WEDSYNC_PRESENCE_BATCH")
    ap.add_argument(
        "--pick",
        choices=("round", "random"),
        default="round",
        help="who sends each update: every member once per round (default: propagation "
        "alone), or a random member (two updates of one member within "
        "WEDSYNC_PRESENCE_WRITE_EVERY coalesce into one write at the window's end)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/presence.json"),
        help="JSON result file (the PNG goes beside it)",
    )
    args = ap.parse_args(argv)
    result, figure = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    write(args.out.parent, args.out.stem, result, figure)


if __name__ == "__main__":
    main()
