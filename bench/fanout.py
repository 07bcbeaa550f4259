"""`fanout`: R rooms x M members, every member sending chat messages at a rate.

    python -m bench fanout --rooms 50 --members 8 --rate 2 --duration 20

Starts the system (bench/system.py: embedded NATS + PostgreSQL, ``--gateways`` API
processes), creates the rooms over the HTTP API, measures the raw JetStream publish ceiling
of one Python process on the same NATS (bench/ceiling.py), then drives the load from
``--loaders`` processes (bench/loadgen.py). Reports events accepted (acks: durable in
JetStream) per second, deliveries per second, send -> every receiver latency and send ->
ack latency, and ingest / ceiling. After the sending phase it waits (``--drain``) until
every acked message has reached every member of its room. A frame the gateway sheds
(``overloaded``) is sent again after its ``retry_after``, same id, as the SDK does; its
latency counts from the first send (``--no-resend``: counted as refused instead).

`drive` is the part `peers` reuses against other servers: same generator, same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from bench import ceiling
from bench.loadgen import LoaderPool, LoadSpec, PoolResult, split
from bench.otlp_sink import Sink, otlp_sink
from bench.report import Figure, write
from bench.stats import CpuMeter, percentiles_us, rss_bytes, service_pids
from bench.system import Seat, populate, running_system
from streams.permissions import Channel, Role
from streams.protocol import Actor, Event


def load_arguments(p: argparse.ArgumentParser) -> None:
    """The load's shape: shared with `peers`, so that every target gets the same."""
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--members", type=int, default=8, help="members per room")
    p.add_argument("--rate", type=float, default=2.0, help="messages per second per member")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of sending")
    p.add_argument("--gateways", type=int, default=2, help="`wedsync api` processes")
    p.add_argument("--loaders", type=int, default=2, help="load generator processes")
    p.add_argument("--sources", type=int, default=2, help="127.0.0.x source addresses")
    p.add_argument("--pad", type=int, default=32, help="bytes of text per message")
    p.add_argument(
        "--drain", type=float, default=15.0, help="most seconds to wait for the last deliveries"
    )
    p.add_argument(
        "--no-resend",
        dest="resend",
        action="store_false",
        help="count `overloaded` refusals instead of sending them again after retry_after",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    load_arguments(p)
    p.add_argument(
        "--tracing",
        action="store_true",
        help="gateways export every span over OTLP to a local sink",
    )
    p.add_argument("--ceiling-seconds", type=float, default=3.0)
    p.add_argument("--ceiling-inflight", type=int, default=256)


# every role reads chat: each message goes to every member of its room, its sender included
ROLES = ("planner", "family", "vendor", "guest")


def sources(n: int) -> tuple[str, ...]:
    """127.0.0.2, 127.0.0.3, ...: all of 127/8 is the loopback interface on Linux."""
    return tuple(f"127.0.0.{2 + i}" for i in range(max(1, n)))


def everything_delivered(members: int) -> Any:
    def check(pool: LoaderPool) -> bool:
        t = pool.totals()
        done = pool.sending_done and t["acked"] + t["errors"] + t["send_failures"] >= t["sent"]
        return done and t["delivered"] >= t["acked"] * members

    return check


async def drive(
    label: str,
    wire: str,
    seats: list[Seat],
    args: argparse.Namespace,
    server_pids: dict[str, list[int]],
    event: tuple[float, Callable[[], Awaitable[dict[str, Any]]]] | None = None,
    gc_pauses: Callable[[], Awaitable[dict[str, dict[str, float]]]] | None = None,
    **spec_options: Any,
) -> tuple[dict[str, Any], PoolResult]:
    """Open every seat's socket, send for ``args.duration``, drain; the run's numbers.
    ``event``: (seconds after the start of sending, what happens then), its report under
    "event"; ``gc_pauses``: the server's collector pauses so far (`System.gc_pauses`),
    reported for the sending phase; ``spec_options``: more `LoadSpec` fields (reconnecting,
    gateways)."""
    epoch = time.time()
    specs = [
        LoadSpec(
            wire=wire,
            seats=part,
            epoch=epoch,
            sources=sources(args.sources),
            rate=args.rate,
            duration=args.duration,
            pad=args.pad,
            resend=args.resend,
            **spec_options,
        )
        for part in split(seats, args.loaders)
    ]
    pool = LoaderPool(label, specs)
    pool.start()
    try:
        await pool.wait_connected(timeout=300)
        meter = CpuMeter({**server_pids, "load generators": pool.pids})
        gc_before = None if gc_pauses is None else await gc_pauses()
        meter.start()
        go_at = time.time() - epoch
        pool.go()
        happening = None
        if event is not None:
            at, action = event

            async def later() -> dict[str, Any]:
                await asyncio.sleep(at)
                return {"at_s": round(time.time() - epoch, 2), **await action()}

            happening = asyncio.create_task(later())
        await pool.watch(args.duration)
        happened = None if happening is None else await happening
        cpu = meter.stop()  # the sending phase only: drain and teardown would dilute it
        gc_during = None if gc_pauses is None else _since(gc_before or {}, await gc_pauses())
        drained = await pool.watch(0, everything_delivered(args.members), timeout=args.drain)
        rss = {name: round(rss_bytes(pids) / 2**20, 1) for name, pids in server_pids.items()}
    finally:
        res = await pool.finish()
    c = res.counts
    expected = c["acked"] * args.members
    result = {
        "sockets_open": c["opened"],
        "connect_failures": c["connect_failures"],
        "gave_up": c["gave_up"],
        "connect_s": round(res.connect_s, 2),
        "sent": c["sent"],
        "acked": c["acked"],
        "errors": c["errors"],
        # `overloaded` refusals: sent again after retry_after (acked later), or with
        # --no-resend counted in errors
        "shed": c["shed"],
        "send_failures": c["send_failures"],
        "dropped_sockets": c["dropped"],
        "delivered": c["delivered"],
        "expected_deliveries": expected,
        "missing_deliveries": max(0, expected - c["delivered"]),
        "drained": drained,
        "offered_per_s": round(len(seats) * args.rate),
        # over the span from the first send to the last ack / delivery: at most the offer
        # when the server keeps up, less when it falls behind and catches up in the drain
        "accepted_per_s": round(c["acked"] / max(args.duration, res.traffic_span["acked"])),
        "accepted_per_min": round(60 * c["acked"] / max(args.duration, res.traffic_span["acked"])),
        "deliveries_per_s": round(
            c["delivered"] / max(args.duration, res.traffic_span["delivered"])
        ),
        "peak_accepted_per_s": max(res.timeline.get("acked", [0])),
        "peak_deliveries_per_s": max(res.timeline.get("delivered", [0])),
        "traffic_span_s": {k: round(v, 2) for k, v in res.traffic_span.items()},
        "latency_us": percentiles_us(res.delivery),
        "ack_latency_us": percentiles_us(res.ack),
        "cpu_percent": cpu,
        "rss_mib": rss,
        "go_at_s": round(go_at, 2),
        "per_second": res.timeline,
        "p99_per_second_ms": res.p99_per_second_ms(),
        # the second of the epoch the per-second p99 list starts at
        "p99_first_second": min(res.by_second, default=0),
    }
    if happened is not None:
        result["event"] = happened
    if gc_during is not None:
        result["gc_pause"] = gc_during
    return result, res


def _since(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Collector pauses between two readings, per generation (seconds as milliseconds)."""
    out = {}
    for gen, now in sorted(after.items()):
        then = before.get(gen, {})
        d = {k: v - then.get(k, 0.0) for k, v in now.items()}
        out[gen] = {
            "count": int(d["count"]),
            "ms": round(d.pop("seconds") * 1000, 1),
            "over_10ms": int(d["over_10ms"]),
            "over_50ms": int(d["over_50ms"]),
        }
    return out


def event_size(pad: int) -> int:
    """Bytes of one stored chat event as the gateway encodes it (for the ceiling run)."""
    event = Event(
        id=str(uuid.uuid4()),
        type="message",
        channel=Channel.CHAT,
        actor=Actor(user_id="m1-1-abcdef", role=Role.FAMILY),
        data={"t": time.time(), "text": "x" * pad},
        ts=time.time(),
    )
    return len(msgspec.json.encode(event))


def config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rooms": args.rooms,
        "members": args.members,
        "rate_per_member": args.rate,
        "duration_s": args.duration,
        "gateways": args.gateways,
        "loaders": args.loaders,
        "sources": args.sources,
        "pad_bytes": args.pad,
    }


async def run(args: argparse.Namespace) -> Path:
    async with contextlib.AsyncExitStack() as stack:
        sink = await stack.enter_async_context(otlp_sink()) if args.tracing else None
        return await _run(args, sink)


async def _run(args: argparse.Namespace, sink: Sink | None) -> Path:
    async with running_system(args.gateways, sink.env() if sink else None) as system:
        started = time.perf_counter()
        seats = await populate(system, args.rooms, args.members, ROLES)
        print(
            f"populated {len(seats)} members in {time.perf_counter() - started:.1f} s", flush=True
        )
        assert system.settings.nats.url is not None
        top = await ceiling.measure(
            system.settings.nats.url,
            args.ceiling_seconds,
            args.ceiling_inflight,
            event_size(args.pad),
        )
        print(f"JetStream ceiling of one Python process: {top['msgs_per_s']:,} msgs/s", flush=True)
        pids = {"gateways": [p.pid for p in system.procs], **service_pids()}
        result, res = await drive(
            "fanout", "wedsync", seats, args, pids, gc_pauses=system.gc_pauses
        )
    ratio = round(result["accepted_per_s"] / top["msgs_per_s"], 3)
    result = {
        "scenario": "fanout",
        "config": config(args),
        **result,
        "jetstream_ceiling": top,
        "ingest_over_ceiling": ratio,
        "tracing": None if sink is None else {"exports": sink.requests, "bytes": sink.bytes},
    }
    figure = Figure(
        f"fanout: {args.rooms} rooms x {args.members}, {args.rate:g} msg/s per member, "
        f"{args.gateways} gateways",
        latency={"send -> each receiver": res.delivery, "send -> ack": res.ack},
        timeline={
            k: [float(v) for v in res.timeline.get(k, [])] for k in ("sent", "acked", "delivered")
        },
    )
    return write(args.out, "fanout", result, figure)
