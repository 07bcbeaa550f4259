"""`wedsync dev` as a user runs it: a real process tree, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from tests.world import eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

READY = re.compile(r"ready at (http://\S+)")


@dataclass
class Dev:
    proc: asyncio.subprocess.Process
    url: str
    stderr: Path

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child(self, *args: str) -> psutil.Process | None:
        """The live child running ``wedsync ARGS`` (``"worker", "conflicts"``), if any."""
        for p in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                ours = p.cmdline()[-len(args) - 1 :] == ["app.cli", *args]
                if ours and p.status() != psutil.STATUS_ZOMBIE:
                    return p
        return None

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def metrics_token(self, data_dir: Path) -> str:
        token: str = json.loads((data_dir / "secrets.json").read_text())["metrics_token"]
        return token


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
        yield Dev(proc, m.group(1), Path(log.name))
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


async def restarted(dev: Dev, args: tuple[str, ...], old_pid: int) -> psutil.Process:
    """Waits for ``wedsync ARGS`` to run again under a new pid; the API must answer
    ``/healthz`` at every poll meanwhile unless it is the one that was killed."""
    async with httpx.AsyncClient(timeout=5) as client:

        async def back() -> psutil.Process | None:
            if args != ("api",):
                assert (await client.get(f"{dev.url}/healthz")).status_code == 200
            new = dev.child(*args)
            return new if new is not None and new.pid != old_pid else None

        return await eventually(back, timeout=30)


async def test_a_killed_worker_is_restarted_and_said_so_while_the_api_keeps_answering(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with wedsync_dev(data, WEDSYNC_DEV_RESTART_DELAY="0.2") as dev:
        worker = dev.child("worker", "conflicts")
        assert worker is not None
        worker.kill()
        new = await restarted(dev, ("worker", "conflicts"), worker.pid)
        assert (
            f"worker conflicts (pid {worker.pid}) exited with exit code -9 (SIGKILL); "
            "restarting it in 0.2s"
        ) in dev.log()
        await eventually(lambda: f"worker conflicts restarted (pid {new.pid})" in dev.log())
        # it is really back: connected to NATS, it answers the metrics scrape
        scraper = {"Authorization": f"Bearer {dev.metrics_token(data)}"}
        async with httpx.AsyncClient(timeout=5) as client:

            async def answering() -> bool:
                r = await client.get(f"{dev.url}/metrics", headers=scraper)
                assert r.status_code == 200
                return f'process="conflicts-{new.pid}"' in r.text

            await eventually(answering, timeout=30)
        assert await ready(dev.url) == 200
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0
    assert not new.is_running() or new.status() == psutil.STATUS_ZOMBIE


async def test_a_killed_api_process_is_restarted_on_the_same_port(tmp_path: Path) -> None:
    async with wedsync_dev(tmp_path / "data", WEDSYNC_DEV_RESTART_DELAY="0.2") as dev:
        api = dev.child("api")
        assert api is not None
        api.kill()
        await restarted(dev, ("api",), api.pid)
        await eventually(lambda: _answers(dev.url), timeout=30)
        assert f"api (pid {api.pid}) exited with exit code -9 (SIGKILL)" in dev.log()
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0


async def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return await ready(url) == 200
    return False


async def test_a_crash_loop_stops_everything_with_a_clear_message(tmp_path: Path) -> None:
    env = {"WEDSYNC_DEV_RESTART_DELAY": "0.1", "WEDSYNC_DEV_CRASH_LOOP": "3/60"}
    async with wedsync_dev(tmp_path / "data", **env) as dev:
        tree = dev.tree()
        for crash in range(1, 4):
            worker = await eventually(lambda: dev.child("worker", "presence"), timeout=30)
            worker.kill()
            if crash < 3:
                await restarted(dev, ("worker", "presence"), worker.pid)
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 1
        assert (
            "wedsync dev: worker presence crashed 3 times within 60s (last: exit code -9 "
            "(SIGKILL)): a crash loop; stopping everything"
        ) in dev.log()
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert alive == []


async def run_cli(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """``wedsync ARGS`` to its end: (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    full_env |= {"WEDSYNC_DATA_DIR": str(data_dir), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_second_dev_on_a_busy_port_says_so_and_never_claims_ready(
    tmp_path: Path,
) -> None:
    async with wedsync_dev(tmp_path / "first") as dev:
        port = dev.url.rsplit(":", 1)[1]
        code, out, err = await run_cli(tmp_path / "second", "dev", "--port", port)
        assert code == 1
        assert "ready" not in out
        assert f"wedsync dev: port {port} on 127.0.0.1 is already in use" in err
        assert "Traceback" not in err
        assert await ready(dev.url) == 200  # the first one is untouched


async def test_a_second_dev_on_the_same_data_dir_says_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    async with wedsync_dev(tmp_path / "data") as dev:
        code, out, err = await run_cli(tmp_path / "data", "dev", "--port", "0")
        assert code == 1
        assert "ready" not in out
        assert f"wedsync dev: data dir {(tmp_path / 'data').resolve()} is in use by pid" in err
        assert "Traceback" not in err
        assert await ready(dev.url) == 200
