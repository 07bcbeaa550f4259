"""Issue 20's restore drill (docs/operations.md "Backups and restore"): a wedding in use, a
PostgreSQL dump (pg_dump, custom format) and a JetStream backup of every stream (the
snapshot API `nats stream backup` uses), everything stopped; then fresh data dirs, the dump
restored with pg_restore and the streams restored before any WedSync process starts; a
client resumes from its last seq with a session from before the backup and is replayed
exactly the events it had not seen, and ``GET /state`` equals the state before the backup.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import nats
import pytest
from cryptography.fernet import Fernet

from bench.faults import FaultSystem, OwnServices, settle
from bench.faults.traffic import Traffic, Wedding
from streams.definitions import STREAMS
from tests.kits.jsbackup import Snapshot, backup, restore
from tests.kits.world import connect, recv
from wedsync.embedded.postgres import postgres_bin_dir

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


class Running:
    """Services already started (and restored into): a FaultSystem must not start them."""

    def __init__(self, services: OwnServices) -> None:
        self.inner = services

    @property
    def nats_url(self) -> str:
        return self.inner.nats_url

    @property
    def database_url(self) -> str:
        return self.inner.database_url

    def can(self, service: str, how: str) -> bool:
        return False

    async def stop(self, service: str, how: str) -> None:
        raise NotImplementedError

    async def start(self, service: str) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def pg(tool: str, *args: str) -> None:
    done = subprocess.run(
        [str(postgres_bin_dir() / tool), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


async def get(base: str, wedding: Wedding, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.get(path, headers=wedding.headers(wedding.couple), params=params)
        r.raise_for_status()
        return r.json()


async def test_a_restore_resumes_clients_and_keeps_the_state(tmp_path: Path) -> None:
    # the same secrets on both sides: tokens and encrypted contact details stay valid
    env = {
        "WEDSYNC_JWT_SECRET": secrets.token_urlsafe(32),
        "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
        "WEDSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    workers = ("conflicts", "notifications")  # settle waits for every mention's notice
    dump = tmp_path / "wedsync.dump"
    async with FaultSystem(tmp_path / "a", gateways=1, workers=workers, env=env) as a:
        wedding = Wedding(a.urls, a.settings.auth)
        await wedding.create()
        traffic = Traffic(wedding, rate=10.0, change_every=0.5)
        try:
            await traffic.seed()
            traffic.start()
            await asyncio.sleep(2.0)  # traffic before the backup (deliberate)
            await traffic.stop()
            assert await settle(a, wedding, 30), "not quiet before the backup"
            # a client that saw the history up to `seen` and then went away
            session = await wedding.request(
                "POST", f"/api/collaboration/join/{wedding.id}", wedding.couple
            )
            history = await wedding.history()
            assert len(history) >= 30
            seen = history[len(history) // 2]["seq"]
            before = await wedding.state(wedding.couple)
        finally:
            await traffic.stop()
            await wedding.close()
        # the backup: the dump first, the streams right after (docs/operations.md)
        pg("pg_dump", "--format=custom", f"--file={dump}", a.services.database_url)
        assert a.nc is not None
        snapshots: list[Snapshot] = [await backup(a.nc, s.name) for s in STREAMS]
    assert {s.stream: s.meta["state"]["messages"] for s in snapshots}["WEDSYNC_EVENTS"] > 0

    # fresh data dirs: restore into them before any WedSync process starts
    async with OwnServices(tmp_path / "b") as fresh:
        pg("pg_restore", "--no-owner", f"--dbname={fresh.database_url}", str(dump))
        nc = await nats.connect(fresh.nats_url)
        try:
            for snapshot in snapshots:
                created = await restore(nc, snapshot)
                assert created["state"]["last_seq"] == snapshot.meta["state"]["last_seq"]
        finally:
            await nc.close()
        async with FaultSystem(
            tmp_path / "b", gateways=1, workers=workers, env=env, services=Running(fresh)
        ) as b:
            base = b.urls[0]
            assert await get(base, wedding, f"/api/weddings/{wedding.id}/state") == before
            # the epoch it had names the restored stream: a resume, not a reload
            ws = await connect(
                base, wedding.id, session["session_token"], after=seen, epoch=before["epoch"]
            )
            try:
                replayed: list[int] = []
                while True:
                    frame = await recv(ws)
                    if frame["type"] == "event":
                        replayed.append(frame["seq"])
                    if frame["type"] == "resumed":
                        assert frame["recovered"] is True, frame
                        break
            finally:
                await ws.close()
            assert replayed == [e["seq"] for e in history if e["seq"] > seen]
            page = await get(
                base, wedding, f"/api/weddings/{wedding.id}/events", after_seq=0, limit=1000
            )
            assert page["events"] == history  # the restored history, event for event
