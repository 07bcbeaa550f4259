"""Ephemeral signals: time from a member's `signal` frame ("typing...") to each other
member of the room receiving its `peer_signal`, across gateway processes.

    python bench/signals.py --users 200 --room 10 --rate 100 --duration 20

Starts embedded NATS + PostgreSQL and `--gateways` API processes, creates rooms of `--room`
members over the HTTP API, opens one WebSocket per member (members of a room spread over
the gateways), then sends `--rate` signals per second from random members (the target
carries the send time) and records, for every other member who receives it, the latency in
an HdrHistogram. Same machine, same clock. Also counts what JetStream stored meanwhile (it
must be nothing). Writes a JSON result file and a PNG beside it; also `python -m bench
signals`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.presence import new_histogram, percentiles
from bench.report import Figure, write
from bench.stats import Timeline
from bench.system import Seat, populate, raise_fd_limit, running_system


async def _stored(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("WEDSYNC_EVENTS")
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def _load(seats: list[Seat], rate: float, duration: float) -> dict[str, Any]:
    import websockets

    hist = new_histogram()
    timeline = Timeline(time.time())
    sockets: list[Any] = []
    received = 0
    sem = asyncio.Semaphore(64)

    async def open_one(seat: Seat) -> None:
        async with sem:
            ws = await websockets.connect(
                seat.ws_url,
                compression=None,
                max_size=2**24,
                open_timeout=120,
                subprotocols=seat.subprotocols,
            )
            await ws.recv()  # welcome
            sockets.append(ws)

    async def read(ws: Any) -> None:
        nonlocal received
        try:
            async for raw in ws:
                if '"peer_signal"' not in raw:
                    continue
                now = time.time()
                for line in raw.split("\n"):
                    target = json.loads(line).get("target") or ""
                    if target.startswith("t:"):
                        hist.record_value(max(1, int((now - float(target[2:])) * 1e6)))
                        received += 1
                        timeline.add("signals received", now=now)
        except Exception:
            return

    started = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in seats))
    connect_s = time.perf_counter() - started
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    timeline.epoch = time.time()
    sent = 0
    interval = 1.0 / rate
    t0 = time.perf_counter()
    next_at = t0
    while time.perf_counter() - t0 < duration:
        ws = random.choice(sockets)
        frame = {"type": "signal", "kind": "viewing", "target": f"t:{time.time():.6f}"}
        await ws.send(json.dumps(frame))
        sent += 1
        timeline.add("signals sent")
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.sleep(1.0)  # in flight
    for t in readers:
        t.cancel()
    for ws in sockets:
        await ws.close()
    return {
        "sent": sent,
        "received": received,
        "hist": hist,
        "timeline": timeline,
        "connect_s": connect_s,
        "open": len(sockets),
    }


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], Figure]:
    raise_fd_limit()
    async with running_system(args.gateways) as system:
        seats = await populate(system, args.users // args.room, args.room, ("planner", "family"))
        nats_url = (system.settings.nats.url or "").split(",")[0]
        before = await _stored(nats_url)
        out = await _load(seats, args.rate, args.duration)
        after = await _stored(nats_url)
    hist: Any = out["hist"]
    timeline: Timeline = out["timeline"]
    result = {
        "scenario": "signals",
        "users": len(seats),
        "room": args.room,
        "gateways": args.gateways,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "signals_sent": out["sent"],
        "signals_received": out["received"],
        "expected_receipts": out["sent"] * (args.room - 1),
        "sockets_open": out["open"],
        "connect_s": out["connect_s"],
        "events_stored_meanwhile": after - before,
        "latency": percentiles(hist),
        "per_second": timeline.series,
    }
    figure = Figure(
        f"signals: {len(seats)} users, rooms of {args.room}, {args.rate:g} signals/s",
        latency={"signal frame -> each member's peer_signal": hist},
        timeline={k: [float(v) for v in vs] for k, vs in timeline.series.items()},
        timeline_xlabel="seconds since the signals started",
    )
    return result, figure


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--room", type=int, default=10, help="members per wedding room")
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--rate", type=float, default=100, help="signals per second")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/signals.json"),
        help="JSON result file (the PNG goes beside it)",
    )
    args = ap.parse_args(argv)
    result, figure = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    write(args.out.parent, args.out.stem, result, figure)


if __name__ == "__main__":
    main()
