"""`wedsync dev` as a user runs it: a real process tree, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from config.settings import Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

READY = re.compile(r"ready at (http://\S+)")


@dataclass
class Dev:
    proc: asyncio.subprocess.Process
    url: str

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


@asynccontextmanager
async def wedsync_dev(data_dir: Path, **env: str) -> AsyncIterator[Dev]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    full_env |= {"WEDSYNC_DATA_DIR": str(data_dir), **env}
    log = (data_dir.parent / f"{data_dir.name}.stderr").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "dev", "--port", "0",
        env=full_env, stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, f"wedsync dev exited ({await proc.wait()}); see {log.name}"
            if m := READY.search(line):
                break
        yield Dev(proc, m.group(1))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def ready(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/readyz")).status_code


def names(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.add(p.name())
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_everything_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    async with wedsync_dev(tmp_path / "data") as dev:
        assert await ready(dev.url) == 200
        tree = dev.tree()
        assert {"nats-server", "postgres"} <= names(tree)
        dev.proc.send_signal(sig)
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert alive == []


async def test_start_after_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with wedsync_dev(data) as dev:
        tree = dev.tree()
        dev.proc.kill()
        await dev.proc.wait()
    # Started again at once, while the orphans of the killed run may still be stopping.
    async with wedsync_dev(data) as dev:
        assert await ready(dev.url) == 200
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert alive == []


async def test_configured_services_are_used_not_embedded(
    tmp_path: Path, settings: Settings
) -> None:
    assert settings.nats.url and settings.database.url
    async with wedsync_dev(
        tmp_path / "data",
        WEDSYNC_NATS_URL=settings.nats.url,
        WEDSYNC_DATABASE_URL=settings.database.url,
    ) as dev:
        assert await ready(dev.url) == 200
        assert not {"nats-server", "postgres"} & names(dev.tree())
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0
    assert not (tmp_path / "data" / "nats").exists()
    assert not (tmp_path / "data" / "postgres").exists()
