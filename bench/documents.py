"""Live documents: time from a Yjs update sent on one document socket to each other editor
of the document receiving it, across gateway processes (through JetStream: an update is
relayed only once stored).

    python bench/documents.py --documents 20 --editors 5 --rate 100 --duration 15

Starts embedded NATS + PostgreSQL and `--gateways` API processes, creates one wedding and
its `notes` document per `--documents`, opens a y-protocols socket per editor (editors of
a document spread over the gateways; each does the sync handshake), then sends `--rate`
updates per second from random editors (pycrdt: each inserts a few characters carrying
the send time) and records, for every other editor who receives it, the latency in an
HdrHistogram. Writes a JSON result and a PNG beside it; also `python -m bench documents`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from pycrdt import Doc, Text, create_sync_message, write_message

from app.auth import issue_token
from bench.presence import new_histogram, percentiles
from bench.report import Figure, write
from bench.stats import Timeline
from bench.system import Seat, System, populate, raise_fd_limit, running_system

_MARK = re.compile(rb"t:(\d+\.\d{6})\|")


async def _documents(system: System, seats: list[Seat]) -> None:
    """One ``notes`` document per wedding, created by its couple (its first seat)."""
    firsts: dict[str, Seat] = {}
    for s in seats:
        firsts.setdefault(s.wedding, s)
    async with httpx.AsyncClient(base_url=system.urls[0], timeout=60) as c:
        for s in firsts.values():
            token = issue_token(system.settings.auth, s.user)
            r = await c.post(
                f"/api/weddings/{s.wedding}/documents",
                json={"name": "notes"},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()


async def _load(seats: list[Seat], rate: float, duration: float) -> dict[str, Any]:
    import websockets

    hist = new_histogram()
    timeline = Timeline(time.time())
    editors: list[tuple[Any, Doc[Any]]] = []
    received = 0
    sem = asyncio.Semaphore(32)

    async def open_one(seat: Seat) -> None:
        async with sem:
            url = f"{seat.ws_url}/documents/notes"
            ws = await websockets.connect(
                url,
                compression=None,
                max_size=2**24,
                open_timeout=120,
                subprotocols=seat.subprotocols,
            )
            doc: Doc[Any] = Doc()
            await ws.send(create_sync_message(doc))
            while True:  # until the server's step 2
                data = await ws.recv()
                if isinstance(data, bytes) and data[:2] == b"\x00\x01":
                    break
            editors.append((ws, doc))

    async def read(ws: Any) -> None:
        nonlocal received
        try:
            async for data in ws:
                if not isinstance(data, bytes) or data[:2] != b"\x00\x02":
                    continue
                now = time.time()
                for m in _MARK.finditer(data):
                    hist.record_value(max(1, int((now - float(m.group(1))) * 1e6)))
                    received += 1
                    timeline.add("updates received", now=now)
        except Exception:
            return

    started = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in seats))
    connect_s = time.perf_counter() - started
    readers = [asyncio.create_task(read(ws)) for ws, _ in editors]
    timeline.epoch = time.time()
    sent = 0
    interval = 1.0 / rate
    t0 = time.perf_counter()
    next_at = t0
    while time.perf_counter() - t0 < duration:
        ws, doc = random.choice(editors)
        text = doc.get("content", type=Text)
        before = doc.get_state()
        text.insert(len(text), f"t:{time.time():.6f}|")
        await ws.send(b"\x00\x02" + write_message(doc.get_update(before)))
        sent += 1
        timeline.add("updates sent")
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.sleep(1.0)  # in flight
    for t in readers:
        t.cancel()
    for ws, _ in editors:
        await ws.close()
    return {
        "sent": sent,
        "received": received,
        "hist": hist,
        "timeline": timeline,
        "connect_s": connect_s,
        "open": len(editors),
    }


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], Figure]:
    raise_fd_limit()
    async with running_system(args.gateways) as system:
        seats = await populate(system, args.documents, args.editors, ("planner", "family"))
        await _documents(system, seats)
        out = await _load(seats, args.rate, args.duration)
    hist: Any = out["hist"]
    timeline: Timeline = out["timeline"]
    result = {
        "scenario": "documents",
        "documents": args.documents,
        "editors": args.editors,
        "gateways": args.gateways,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "updates_sent": out["sent"],
        "updates_received": out["received"],
        "expected_receipts": out["sent"] * (args.editors - 1),
        "sockets_open": out["open"],
        "connect_s": out["connect_s"],
        "latency": percentiles(hist),
        "per_second": timeline.series,
    }
    figure = Figure(
        f"documents: {args.documents} documents x {args.editors} editors, {args.rate:g} updates/s",
        latency={"update -> each other editor (stored first)": hist},
        timeline={k: [float(v) for v in vs] for k, vs in timeline.series.items()},
        timeline_xlabel="seconds since the updates started",
    )
    return result, figure


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--documents", type=int, default=20)
    ap.add_argument("--editors", type=int, default=5, help="editors per document")
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--rate", type=float, default=100, help="updates per second, in all")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/documents.json"),
        help="JSON result file (the PNG goes beside it)",
    )
    args = ap.parse_args(argv)
    result, figure = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    write(args.out.parent, args.out.stem, result, figure)


if __name__ == "__main__":
    main()
