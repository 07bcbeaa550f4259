"""`connections`: ramp to N authenticated WebSockets, hold them with heartbeats, measure.

    python -m bench connections --connections 2000 --gateways 2 --loaders 2 --hold 20

Creates N members (rooms of ``--room``) over the HTTP API, then opens one socket per
member's session from ``--loaders`` processes and ``--sources`` 127.0.0.x source addresses
(at most ``--concurrency`` handshakes in flight per process), each answered by its welcome
frame. Holds them for ``--hold`` seconds with a `ping` frame per socket every
``--heartbeat`` seconds. Reports the connect rate, connections held at the end, failures,
ping round trips, and server memory per idle connection: (RSS of all gateway processes
after - before) / connections.

Limits to plan for at full scale: 20 000 open files per process (both ends: gateways and
load processes each need N / processes + a few), ~28 000 ephemeral ports per source address.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from bench.fanout import ROLES, sources
from bench.loadgen import LoaderPool, LoadSpec, split
from bench.report import Figure, write
from bench.stats import CpuMeter, percentiles_us, rss_bytes, service_pids
from bench.system import populate, running_system


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--room", type=int, default=8, help="members per wedding")
    p.add_argument("--gateways", type=int, default=2, help="`wedsync api` processes")
    p.add_argument("--loaders", type=int, default=2, help="load generator processes")
    p.add_argument("--sources", type=int, default=4, help="127.0.0.x source addresses")
    p.add_argument(
        "--concurrency", type=int, default=100, help="handshakes in flight per load process"
    )
    p.add_argument("--hold", type=float, default=20.0, help="seconds to hold them open")
    p.add_argument("--heartbeat", type=float, default=5.0, help="seconds between pings")


def _check_limits(args: argparse.Namespace) -> None:
    per_loader = math.ceil(args.connections / args.loaders)
    per_gateway = math.ceil(args.connections / args.gateways)
    per_source = math.ceil(args.connections / args.sources)
    for what, n, limit in (
        ("load process", per_loader, 19_000),
        ("gateway process", per_gateway, 19_000),
        ("source address", per_source, 28_000),
    ):
        if n > limit:
            raise SystemExit(
                f"{n} sockets per {what} is over ~{limit}: add more "
                f"(--loaders / --gateways / --sources)"
            )


async def run(args: argparse.Namespace) -> Path:
    _check_limits(args)
    async with running_system(args.gateways) as system:
        started = time.perf_counter()
        weddings = math.ceil(args.connections / args.room)
        seats = (await populate(system, weddings, args.room, ROLES))[: args.connections]
        print(
            f"populated {len(seats)} members in {time.perf_counter() - started:.1f} s", flush=True
        )
        gateway_pids = [p.pid for p in system.procs]
        nats_pids = service_pids()["nats-server"]
        rss_before = rss_bytes(gateway_pids)
        nats_before = rss_bytes(nats_pids)
        epoch = time.time()
        specs = [
            LoadSpec(
                wire="wedsync",
                seats=part,
                epoch=epoch,
                sources=sources(args.sources),
                duration=0.0,
                heartbeat=args.heartbeat,
                connect_concurrency=args.concurrency,
                connect_timeout=120,
            )
            for part in split(seats, args.loaders)
        ]
        pool = LoaderPool("connections", specs)
        pool.start()
        memory: list[float] = []
        try:
            await pool.wait_connected(timeout=600)
            ramp = pool.totals()
            meter = CpuMeter(
                {"gateways": gateway_pids, **service_pids(), "load generators": pool.pids}
            )
            meter.start()
            pool.go()
            for _ in range(max(1, round(args.hold))):
                await pool.watch(1.0)
                memory.append(round(rss_bytes(gateway_pids) / 2**20, 1))
            cpu = meter.stop()
            rss_after = rss_bytes(gateway_pids)
            nats_after = rss_bytes(nats_pids)
            held = pool.totals()
        finally:
            res = await pool.finish()
    c = res.counts
    opened = int(ramp["opened"])
    per_conn = (rss_after - rss_before) / max(1, opened)
    result: dict[str, Any] = {
        "scenario": "connections",
        "config": {
            "connections": args.connections,
            "room": args.room,
            "gateways": args.gateways,
            "loaders": args.loaders,
            "sources": args.sources,
            "concurrency": args.concurrency,
            "hold_s": args.hold,
            "heartbeat_s": args.heartbeat,
        },
        "opened": opened,
        "connect_failures": c["connect_failures"],
        "gave_up": c["gave_up"],
        "ramp_s": round(res.connect_s, 2),
        "connect_rate_per_s": round(opened / max(res.connect_s, 1e-9)),
        "held": int(held["opened"] - held["dropped"]),
        "dropped": int(held["dropped"]),
        "pings": c["pings"],
        "pongs": c["pongs"],
        "gateway_rss_mib_before": round(rss_before / 2**20, 1),
        "gateway_rss_mib_after": round(rss_after / 2**20, 1),
        "gateway_rss_mib_per_second": memory,
        "memory_per_connection_kib": round(per_conn / 1024, 2),
        # the rooms' consumers and subscriptions (one room per wedding and gateway process)
        "rooms": math.ceil(opened / args.room),
        "nats_rss_mib_before": round(nats_before / 2**20, 1),
        "nats_rss_mib_after": round(nats_after / 2**20, 1),
        "connect_latency_us": percentiles_us(res.connect),
        "ping_rtt_us": percentiles_us(res.rtt),
        "cpu_percent_holding": cpu,
        "failures_sample": res.failures,
        "per_second": res.timeline,
    }
    figure = Figure(
        f"connections: {opened} held, {args.gateways} gateways, ping every {args.heartbeat:g} s",
        latency={"connect (TCP + WebSocket + welcome)": res.connect, "ping -> pong": res.rtt},
        timeline={k: [float(v) for v in res.timeline.get(k, [])] for k in ("opened", "pongs")},
    )
    return write(args.out, "connections", result, figure)
