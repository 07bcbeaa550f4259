"""`overload`: the fanout load at multiples of the capacity, admission control on and off.

    python -m bench overload --capacity 1600 --levels 0.5,1,2 --rooms 250 --members 8

For each mode (``--modes on,off``: admission control as configured, or switched off with
``WEDSYNC_WS_MAX_LAG=0`` and no cap on publishes in flight) the system is started afresh,
the rooms created, and the load of bench/fanout.py driven at ``level x capacity`` messages
per second for each level in turn. Per level: offered, accepted (acked: durable) and
refused (``overloaded``) per second, p50/p99 of accepted messages from send to every
receiver, the worst p99 of any one second, and whether every acked message reached every
member within the drain. ``--capacity`` is the rate one measured with `fanout` as the most
the system sustains (accepted = offered, p99 well under a second).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from bench.fanout import ROLES, drive, load_arguments
from bench.report import Figure, write
from bench.stats import service_pids
from bench.system import populate, running_system

OFF = {"WEDSYNC_WS_MAX_LAG": "0", "WEDSYNC_WS_MAX_INFLIGHT": "1000000000"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    load_arguments(p)
    p.add_argument(
        "--capacity",
        type=float,
        required=True,
        help="messages/s the system sustains (measured with `fanout`)",
    )
    p.add_argument("--levels", default="0.5,1,2", help="multiples of the capacity to offer")
    p.add_argument(
        "--modes", default="on,off", help="admission control on (as configured) and/or off"
    )


def _level(args: argparse.Namespace, level: float) -> argparse.Namespace:
    out = copy.copy(args)
    out.resend = False  # what is refused per second, not how clients back off
    out.rate = level * args.capacity / (args.rooms * args.members)
    return out


def _summary(level: float, r: dict[str, Any], duration: float) -> dict[str, Any]:
    per_second = [p for p in r["p99_per_second_ms"] if p]
    return {
        "level": level,
        "offered_per_s": r["offered_per_s"],
        "accepted_per_s": r["accepted_per_s"],
        "refused_per_s": round(r["shed"] / duration),
        "p50_ms": round(r["latency_us"]["p50_us"] / 1000, 1),
        "p99_ms": round(r["latency_us"]["p99_us"] / 1000, 1),
        "worst_second_p99_ms": max(per_second, default=0.0),
        "all_delivered": r["drained"] and r["missing_deliveries"] == 0,
        "missing_deliveries": r["missing_deliveries"],
        "dropped_sockets": r["dropped_sockets"],
    }


async def run(args: argparse.Namespace) -> Path:
    levels = [float(x) for x in args.levels.split(",") if x.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, list[dict[str, Any]]] = {}
    figure_latency = {}
    for mode in modes:
        env = OFF if mode == "off" else None
        async with running_system(args.gateways, env) as system:
            started = time.perf_counter()
            seats = await populate(system, args.rooms, args.members, ROLES)
            print(
                f"[{mode}] populated {len(seats)} members in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            pids = {"gateways": [p.pid for p in system.procs], **service_pids()}
            rows = []
            for level in levels:
                r, res = await drive(
                    f"{mode} x{level:g}", "wedsync", seats, _level(args, level), pids
                )
                row = {
                    **_summary(level, r, args.duration),
                    "cpu_percent": r["cpu_percent"],
                    "p99_per_second_ms": r["p99_per_second_ms"],
                }
                print(
                    f"[{mode} x{level:g}] "
                    + ", ".join(f"{k} {v}" for k, v in row.items() if k != "p99_per_second_ms"),
                    flush=True,
                )
                rows.append(row)
                figure_latency[f"{mode} x{level:g}"] = res.delivery
            results[mode] = rows
    config = {
        "rooms": args.rooms,
        "members": args.members,
        "duration_s": args.duration,
        "gateways": args.gateways,
        "loaders": args.loaders,
        "capacity": args.capacity,
        "levels": levels,
    }
    figure = Figure(
        f"overload: {args.rooms} rooms x {args.members}, capacity {args.capacity:g} msg/s",
        latency=figure_latency,
        timeline={
            f"{m} x{row['level']:g} p99 ms": [float(x) for x in row["p99_per_second_ms"]]
            for m, rows in results.items()
            for row in rows
        },
        timeline_title="p99 of accepted messages, per second",
        timeline_ylabel="ms",
    )
    return write(
        args.out, "overload", {"scenario": "overload", "config": config, "modes": results}, figure
    )
