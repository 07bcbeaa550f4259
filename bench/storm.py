"""`storm`: a reconnect storm, as after a gateway restart: every socket back and resumed.

    python -m bench storm --rooms 250 --members 8 --rate 0.5 --duration 30 --storm-at 10

The fan-out load (bench/fanout.py: rooms of members sending chat at ``--rate`` each) runs on
``--gateways`` API processes; ``--storm-at`` seconds into it the bench restarts ``--restart``
of them at once, as a deploy does (SIGTERM: a gateway closes its sockets with 1012; then a
new process on the same port). Every dropped socket connects again with the SDK's backoff
(full jitter, 250 ms doubling: sdk/js/src/backoff.ts), to its own gateway or the next one,
with ``?after_seq=`` its last seq: the replay of what it missed, ``resumed``, then live.
Messages its sender could not send while it was away are not retried (send failures).

Reports the per-second p99 of delivery latency (send -> every receiver, so a message that
waited for its receiver's reconnect counts with its wait), the steady p99 before the storm,
the seconds from the restart until the per-second p99 is steady again (three seconds in a
row with deliveries, within ``--steady-factor`` of it), each socket's
drop -> resumed time, and whether every acked message reached every member exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench import fanout
from bench.report import Figure, write
from bench.stats import percentiles_us, service_pids
from bench.system import System, populate, running_system


def add_arguments(p: argparse.ArgumentParser) -> None:
    fanout.load_arguments(p)
    p.set_defaults(rooms=250, members=8, rate=0.5, duration=30.0, gateways=1)
    p.add_argument("--storm-at", type=float, default=10.0, help="seconds into the sending")
    p.add_argument(
        "--restart", type=int, default=0, help="gateways restarted at once (0: all of them)"
    )
    p.add_argument(
        "--steady-factor",
        type=float,
        default=2.0,
        help="steady again: per-second p99 within this factor of the p99 before the storm",
    )


def recovery(
    p99s: list[float], first: int, before: tuple[int, int], after: int, factor: float
) -> tuple[float, float, int | None]:
    """The steady p99 (median of the per-second p99s of seconds ``before``) and the first
    second from ``after`` on whose p99, and the next two, are within ``factor`` of it (at
    least 10 ms above it: a 2 ms steady state is not unsteady at 5 ms)."""
    window = [p99s[s - first] for s in range(*before) if 0 <= s - first < len(p99s)]
    steady = statistics.median(window) if window else 0.0
    bound = max(steady * factor, steady + 10.0)
    for s in range(max(after, first), first + len(p99s) - 2):
        # a second without deliveries (0) is the outage, not a steady second
        if all(0 < p99s[t - first] <= bound for t in (s, s + 1, s + 2)):
            return steady, bound, s
    return steady, bound, None


async def run(args: argparse.Namespace) -> Path:
    async with running_system(args.gateways) as system:
        seats = await populate(system, args.rooms, args.members, fanout.ROLES)
        pids = {"gateways": [p.pid for p in system.procs], **service_pids()}
        count = args.restart or len(system.procs)

        async def storm() -> dict[str, Any]:
            return await _restart(system, count)

        result, res = await fanout.drive(
            "storm",
            "wedsync",
            seats,
            args,
            pids,
            event=(args.storm_at, storm),
            reconnect=True,
            gateways=tuple(system.urls),
        )
    event = result["event"]
    first, p99s = result["p99_first_second"], result["p99_per_second_ms"]
    go = int(result["go_at_s"])
    at = int(event["at_s"])
    steady, bound, back = recovery(p99s, first, (go + 2, at), at, args.steady_factor)
    out = {
        "scenario": "storm",
        "config": {**fanout.config(args), "storm_at_s": args.storm_at, "restarted": count},
        "storm": {
            **event,
            "sockets_dropped": result["dropped_sockets"],
            "reconnects": res.counts["reconnects"],
            "resumed": res.counts["resumed"],
            "duplicates": res.counts["duplicates"],
            "drop_to_resumed_us": percentiles_us(res.recovery),
            # of that, the server's part: the reconnect that worked, from TCP connect to welcome
            "reconnect_handshake_us": percentiles_us(res.rehandshake),
            "steady_p99_ms": steady,
            "steady_bound_ms": bound,
            "steady_again_after_s": None if back is None else back - at,
            "steady_again_after_ready_s": (
                None if back is None else round(back - at - event["restart_s"], 2)
            ),
        },
        **{k: v for k, v in result.items() if k != "event"},
    }
    figure = Figure(
        f"storm: {args.rooms} rooms x {args.members}, {count} of {args.gateways} gateways "
        f"restarted at {args.storm_at:g} s",
        latency={"send -> each receiver": res.delivery, "drop -> resumed": res.recovery},
        timeline={
            "p99 per second (ms)": [0.0] * first + p99s,
            **{
                k: [float(v) for v in res.timeline.get(k, [])]
                for k in ("acked", "delivered", "reconnects")
            },
        },
    )
    return write(args.out, "storm", out, figure)


async def _restart(system: System, count: int) -> dict[str, Any]:
    started = time.perf_counter()
    ready = await asyncio.gather(*(system.restart(i) for i in range(count)))
    return {
        "restart_s": round(time.perf_counter() - started, 2),
        "new_process_ready_s": [round(r, 2) for r in ready],
    }
