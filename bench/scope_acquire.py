"""What the wedding scope (row-level security, runtime/db/scope.py) adds to a pool acquire.

    python -m bench.scope_acquire [--n 5000] [--runs 5] [--weddings 1000]

An embedded PostgreSQL in a temporary directory, migrated as its superuser; 1 000 weddings
of 5 members each. Each operation is acquire, one query, release, one task after another
(the latency one request pays, not throughput), timed per operation:

* ``owner``: the superuser's pool, RLS not applied, no scope (the app before issue 22);
* ``runtime, unscoped``: the runtime role's pool with the scope hook but no scope set (the
  hook's cost when it has nothing to do; the query sees no rows);
* ``runtime, wedding``: the runtime role inside ``scope.wedding(id)``: the hook's one
  extra round trip (``set_config`` x 2) plus the policies' filter;
* ``owner + SELECT 1``: the owner's pool with one more query per operation: what one round
  trip costs on this machine, to read the others against.

The query is the edge's most frequent one, the membership lookup (``require_member``).
Prints the median microseconds per operation of each case, per run and overall.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from app.weddings import store as wedding_store
from runtime.db import migrate, scope
from wedsync.embedded import EmbeddedPostgres


async def _seed(owner: asyncpg.Connection[Any], weddings: int) -> list[tuple[uuid.UUID, str]]:
    ids = [uuid.uuid4() for _ in range(weddings)]
    await owner.executemany(
        "INSERT INTO weddings (id, name, date, timezone, created_by) "
        "VALUES ($1, 'W', '2027-06-01', 'UTC', 'u0')",
        [(w,) for w in ids],
    )
    await owner.executemany(
        "INSERT INTO wedding_members (wedding_id, user_id, role, added_by) "
        "VALUES ($1, $2, 'planner', 'u0')",
        [(w, f"u{i}") for w in ids for i in range(5)],
    )
    await owner.execute("ANALYZE")
    return [(w, "u3") for w in ids]


async def _timed(
    pool: asyncpg.Pool, pairs: list[tuple[uuid.UUID, str]], n: int, case: str
) -> float:
    """Median seconds of one acquire + membership lookup + release."""
    samples = []
    for i in range(n):
        w, user = pairs[i % len(pairs)]
        t0 = time.perf_counter()
        if case == "runtime, wedding":
            with scope.wedding(w):
                async with pool.acquire() as conn:
                    await wedding_store.membership(conn, w, user)
        else:
            async with pool.acquire() as conn:
                if case == "owner + SELECT 1":
                    await conn.fetchval("SELECT 1")
                await wedding_store.membership(conn, w, user)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def run(n: int, runs: int, weddings: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wedsync-bench-scope-") as tmp:
        async with EmbeddedPostgres(Path(tmp) / "postgres") as pg:
            owner = await asyncpg.connect(pg.url)
            try:
                await migrate(owner)
                pairs = await _seed(owner, weddings)
            finally:
                await owner.close()
            pools = {
                "owner": await asyncpg.create_pool(pg.url, min_size=1, max_size=1),
                "runtime, unscoped": await asyncpg.create_pool(
                    pg.service_url, min_size=1, max_size=1, setup=scope.on_acquire
                ),
                "runtime, wedding": await asyncpg.create_pool(
                    pg.service_url, min_size=1, max_size=1, setup=scope.on_acquire
                ),
                "owner + SELECT 1": await asyncpg.create_pool(pg.url, min_size=1, max_size=1),
            }
            try:
                per_run: dict[str, list[float]] = {k: [] for k in pools}
                for _ in range(runs):
                    for name, pool in pools.items():  # interleaved: drift hits all alike
                        await _timed(pool, pairs, n // 10, name)  # warm
                        med = await _timed(pool, pairs, n, name)
                        per_run[name].append(med * 1e6)
            finally:
                for pool in pools.values():
                    await pool.close()
    out: dict[str, Any] = {
        name: {"median_us": round(statistics.median(v), 1), "runs_us": [round(x, 1) for x in v]}
        for name, v in per_run.items()
    }
    base = out["owner"]["median_us"]
    out["added_us"] = {k: round(v["median_us"] - base, 1) for k, v in out.items() if k != "owner"}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.scope_acquire", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=5000, help="operations per case per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--weddings", type=int, default=1000)
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.n, args.runs, args.weddings))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
