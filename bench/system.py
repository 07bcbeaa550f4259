"""Start the system under test for a benchmark, and populate weddings with members.

Embedded NATS + PostgreSQL in a temporary data dir (or the ones WEDSYNC_NATS_URL /
WEDSYNC_DATABASE_URL point at), K `wedsync api` processes on free ports, all stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from app.auth import issue_token
from bench.seats import Seat, raise_fd_limit
from config.settings import Settings
from runtime.connections import connect, prepare
from wedsync.embedded import embedded_services
from wedsync.embedded.process import free_port
from wedsync.supervisor import wait_ready

__all__ = ["OPEN_LIMITS", "Seat", "System", "populate", "raise_fd_limit", "running_system"]

# the load generator is one "user" per socket but many requests from one address
OPEN_LIMITS = {
    "WEDSYNC_RATE_LIMIT_USER": "1000000/minute",
    "WEDSYNC_RATE_LIMIT_IP": "100000000/minute",
    "WEDSYNC_RATE_LIMIT_WS": "100000000/minute",  # thousands of handshakes per source address
    "WEDSYNC_WS_RATE": "1000",
    "WEDSYNC_WS_BURST": "1000",
    # resume runs replay the same 10 000 events back to back from one user
    "WEDSYNC_WS_RESUME_RATE": "100000000",
    "WEDSYNC_WS_RESUME_BURST": "100000000",
    "WEDSYNC_LOG_LEVEL": "WARNING",
}


@dataclass
class System:
    settings: Settings
    urls: list[str]
    procs: list[asyncio.subprocess.Process]
    spawn: Callable[[str], Awaitable[asyncio.subprocess.Process]]

    async def restart(self, i: int) -> float:
        """Stop gateway ``i`` as a deploy does (SIGTERM: it closes its sockets with 1012)
        and start a new one on the same port; the seconds until it answers /ready."""
        old = self.procs[i]
        if old.returncode is None:
            old.terminate()
        await old.wait()
        started = time.perf_counter()
        self.procs[i] = await self.spawn(self.urls[i])
        await asyncio.wait_for(wait_ready(self.urls[i], self.procs), 60)
        return time.perf_counter() - started

    async def gc_pauses(self) -> dict[str, dict[str, float]]:
        """The API processes' garbage-collector pauses so far (``wedsync.gc.pause``, from
        one `/metrics` scrape), summed per generation: collections, seconds stopped, and
        collections that stopped a process for more than 10 ms and 50 ms."""
        token = self.settings.auth.admin_token
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(
                f"{self.urls[0]}/metrics", headers={"Authorization": f"Bearer {token}"}
            )
        r.raise_for_status()
        # generation -> count, sum, le=<bound> -> value
        sums: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        for family in text_string_to_metric_families(r.text):
            if family.name != "wedsync_gc_pause_seconds":
                continue
            for sample in family.samples:
                if sample.labels.get("process", "api").startswith("api"):
                    kind = sample.name.rsplit("_", 1)[1]  # count, sum or bucket
                    key = f"le={sample.labels['le']}" if kind == "bucket" else kind
                    sums[sample.labels.get("generation", "?")][key] += sample.value
        return {
            gen: {
                "count": c["count"],
                "seconds": c["sum"],
                "over_10ms": c["count"] - c["le=0.01"],
                "over_50ms": c["count"] - c["le=0.05"],
            }
            for gen, c in sums.items()
        }

    def gateway_rss(self) -> int:
        total = 0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(p.pid)
                total += proc.memory_info().rss
                total += sum(c.memory_info().rss for c in proc.children(recursive=True))
        return total


@contextlib.asynccontextmanager
async def running_system(gateways: int, env: dict[str, str] | None = None) -> AsyncIterator[System]:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="wedsync-bench-") as tmp:
        base = Settings.from_env(
            {
                **{k: v for k, v in os.environ.items() if k.startswith("WEDSYNC_")},
                "WEDSYNC_DATA_DIR": str(Path(tmp) / "data"),
                "WEDSYNC_JWT_SECRET": secrets.token_urlsafe(48),
                "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
                "WEDSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),  # `wedsync api` requires it
                **OPEN_LIMITS,
                **(env or {}),
            }
        )
        async with embedded_services(base) as live:
            async with connect(live, name="bench") as conns:
                await prepare(conns, live)

            async def spawn(url: str) -> asyncio.subprocess.Process:
                child_env = {
                    **os.environ,
                    **live.to_env(),
                    "WEDSYNC_PORT": url.rsplit(":", 1)[1],
                    **OPEN_LIMITS,
                    **(env or {}),
                }
                return await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "wedsync.cli",
                    "api",
                    env=child_env,
                    preexec_fn=raise_fd_limit,
                )

            urls = [f"http://127.0.0.1:{free_port()}" for _ in range(gateways)]
            procs = [await spawn(url) for url in urls]
            system = System(live, urls, procs, spawn)
            try:
                for url in urls:
                    await asyncio.wait_for(wait_ready(url, procs), 60)
                yield system
            finally:
                for p in system.procs:
                    if p.returncode is None:  # one that died early must not hide why
                        p.terminate()
                for p in system.procs:
                    await p.wait()


async def populate(
    system: System, weddings: int, members: int, roles: tuple[str, ...], concurrency: int = 32
) -> list[Seat]:
    """``weddings`` weddings of ``members`` members each (couple + ``roles`` cycling), each
    joined once; seats spread over the gateways round-robin."""
    auth = system.settings.auth
    sem = asyncio.Semaphore(concurrency)
    seats: list[Seat] = []

    def hdr(user: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + issue_token(auth, user)}

    async def call(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
        """One setup request; retried when a pooled keep-alive connection was closed by
        the server just as it was reused (httpx.ReadError). A retried POST may create a
        spare wedding or session: harmless here."""
        for attempt in range(4):
            try:
                r = await client.request(method, url, **kw)
                r.raise_for_status()
                return r
            except httpx.TransportError:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def one(i: int, client: httpx.AsyncClient) -> None:
        async with sem:
            couple = f"c{i}-{uuid.uuid4().hex[:6]}"
            r = await call(
                client,
                "POST",
                "/api/weddings",
                headers=hdr(couple),
                json={"name": f"W{i}", "date": "2027-06-12", "timezone": "UTC"},
            )
            wid = r.json()["id"]
            users = [couple]
            for j in range(members - 1):
                user = f"m{i}-{j}-{uuid.uuid4().hex[:6]}"
                await call(
                    client,
                    "PUT",
                    f"/api/weddings/{wid}/members/{user}",
                    headers=hdr(couple),
                    json={"role": roles[j % len(roles)]},
                )
                users.append(user)
            for k, user in enumerate(users):
                r = await call(client, "POST", f"/api/collaboration/join/{wid}", headers=hdr(user))
                url = system.urls[(i * members + k) % len(system.urls)]
                seats.append(Seat(url, wid, user, r.json()["session_token"]))

    clients = [httpx.AsyncClient(base_url=u, timeout=60) for u in system.urls]
    try:
        await asyncio.gather(*(one(i, clients[i % len(clients)]) for i in range(weddings)))
    finally:
        for c in clients:
            await c.aclose()
    return seats
