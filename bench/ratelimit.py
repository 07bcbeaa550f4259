"""The HTTP rate limiter's own cost, per strategy (issue 19): what checking a request costs an
API process when it serves many users, and what the limiter's expiry sweep takes from it.

    python bench/ratelimit.py --users 20000 --rate 2000 --duration 20

``--rate`` requests per second, each from a random one of ``--users`` users, go through
:class:`app.auth.ratelimit.RateLimits` (the per-user and per-IP checks every request pays),
one strategy after the other in a fresh child process each. Reported per strategy: CPU of the
process (its threads included) per second and per check, threads used, check latency and
event-loop lag (p50 / p99, and the worst per-second p99), and checks refused (none expected:
the rate per user is far below the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from bench.stats import new_histogram, percentiles_us, record_seconds


async def _lag(stop: asyncio.Event, per_second: dict[int, Any], start: float) -> None:
    """Event-loop lag: how late a 10 ms sleep wakes, per second of the run."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        late = time.perf_counter() - t - 0.01
        record_seconds(per_second.setdefault(int(t - start), new_histogram()), max(late, 0.0))


async def child(strategy: str, users: int, rate: int, duration: float) -> dict[str, Any]:
    from app.auth.ratelimit import RateLimits
    from app.errors import RateLimited
    from config.settings import Settings

    auth = Settings.from_env({}).auth
    limits = RateLimits(auth, "sliding" if strategy == "none" else strategy)
    check = strategy != "none"  # "none": the harness alone, the baseline to subtract
    names = [f"user-{i}" for i in range(users)]
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(users)]
    proc = psutil.Process()
    checks, lags = new_histogram(), new_histogram()
    lag_seconds: dict[int, Any] = {}
    check_seconds: dict[int, Any] = {}
    refused = threads = 0
    # warm up: every user once, as 20 000 signed-in users have been
    for i in range(users):
        await limits.check_user(names[i])
        await limits.check_ip(ips[i])
    stop = asyncio.Event()
    start = time.perf_counter()
    lagger = asyncio.create_task(_lag(stop, lag_seconds, start))
    cpu0 = proc.cpu_times()
    sent, tick = 0, 0.005
    while (now := time.perf_counter() - start) < duration:
        due = int(now * rate)
        while sent < due:
            i = random.randrange(users)
            t = time.perf_counter()
            try:
                if check:
                    await limits.check_user(names[i])
                    await limits.check_ip(ips[i])
            except RateLimited:
                refused += 1
            took = time.perf_counter() - t
            record_seconds(checks, took)
            record_seconds(check_seconds.setdefault(int(now), new_histogram()), took)
            sent += 1
        threads = max(threads, threading.active_count())
        await asyncio.sleep(tick)
    cpu1 = proc.cpu_times()
    stop.set()
    await lagger
    for h in lag_seconds.values():
        lags.add(h)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "strategy": strategy,
        "users": users,
        "rate": rate,
        "duration": duration,
        "checks": sent,
        "refused": refused,
        "threads": threads,
        "cpu_percent": round(100 * cpu / duration, 1),
        "cpu_us_per_check": round(1e6 * cpu / max(sent, 1), 1),
        "check_us": percentiles_us(checks),
        "loop_lag_us": percentiles_us(lags),
        "worst_second_check_p99_us": max(
            percentiles_us(h)["p99_us"] for h in check_seconds.values()
        ),
        "worst_second_lag_p99_us": max(percentiles_us(h)["p99_us"] for h in lag_seconds.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=2_000, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--strategies", default="none,moving,sliding")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child, args.users, args.rate, args.duration))
        print(json.dumps(result))
        return
    results = []
    for strategy in args.strategies.split(","):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.ratelimit",
                "--child",
                strategy,
                "--users",
                str(args.users),
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        print(
            f"{r['strategy']:>8}: {r['checks']} checks, {r['refused']} refused, "
            f"CPU {r['cpu_percent']} % ({r['cpu_us_per_check']} µs/check), "
            f"threads {r['threads']}, check p50/p99 {r['check_us']['p50_us']:.0f}/"
            f"{r['check_us']['p99_us']:.0f} µs (worst second p99 "
            f"{r['worst_second_check_p99_us']:.0f}), loop lag p50/p99 "
            f"{r['loop_lag_us']['p50_us']:.0f}/{r['loop_lag_us']['p99_us']:.0f} µs (worst second "
            f"p99 {r['worst_second_lag_p99_us']:.0f})"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
