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
from typing import Any

import httpx
import jwt
import psutil
import pytest

from config.settings import Settings
from tests.kits.world import eventually

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
                ours = p.cmdline()[-len(args) - 1 :] == ["wedsync.cli", *args]
                if ours and p.status() != psutil.STATUS_ZOMBIE:
                    return p
        return None

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def metrics_token(self, data_dir: Path) -> str:
        token: str = json.loads((data_dir / "secrets.json").read_text())["metrics_token"]
        return token


async def spawn_cli(
    data_dir: Path, *args: str, stderr: Any = asyncio.subprocess.PIPE, **env: str
) -> asyncio.subprocess.Process:
    """``wedsync ARGS`` started with this data dir and ``env``, and none of our own
    ``WEDSYNC_*`` settings (stdout piped)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    full_env |= {"WEDSYNC_DATA_DIR": str(data_dir), **env}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


@asynccontextmanager
async def wedsync_dev(data_dir: Path, **env: str) -> AsyncIterator[Dev]:
    log = (data_dir.parent / f"{data_dir.name}.stderr").open("ab")
    proc = await spawn_cli(data_dir, "dev", "--port", "0", stderr=log, **env)
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
        WEDSYNC_MIGRATE_DATABASE_URL=settings.database.migrate_url or settings.database.url,
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
    proc = await spawn_cli(data_dir, *args, **env)
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


# --- the commands that print a development secret -----------------------------------------

PRINTING = ["token --user alice", "admin-token", "metrics-token"]


@pytest.mark.parametrize("command", PRINTING)
async def test_a_printing_command_outside_the_dev_data_dir_refuses_to_invent_a_secret(
    tmp_path: Path, command: str
) -> None:
    # as a newcomer runs it: from another directory, no WEDSYNC_DATA_DIR (./.wedsync)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = await run_cli_in(elsewhere, *command.split())
    assert code == 2
    assert out == ""  # nothing to paste into a request that would be refused
    name = command.split()[0]
    assert f"wedsync {name}: " in err
    assert f"{(elsewhere / '.wedsync' / 'secrets.json').resolve()} holds no " in err
    assert "WEDSYNC_DATA_DIR" in err and "--new-secret" in err
    assert "Traceback" not in err
    assert not (elsewhere / ".wedsync").exists()  # nothing generated


@pytest.mark.parametrize("command", PRINTING)
async def test_new_secret_creates_them_once_and_dev_then_uses_them(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    code, first, err = await run_cli(data, *command.split(), "--new-secret")
    assert code == 0, err
    stored = json.loads((data / "secrets.json").read_text())
    assert (data / "secrets.json").stat().st_mode & 0o077 == 0
    # later calls need no flag and print the same secret (or sign with it)
    code, again, err = await run_cli(data, *command.split())
    assert code == 0, err
    assert json.loads((data / "secrets.json").read_text()) == stored
    if command == "admin-token":
        assert first.strip() == again.strip() == stored["admin_token"]
    elif command == "metrics-token":
        assert first.strip() == again.strip() == stored["metrics_token"]
    else:
        for token in (first, again):
            claims = jwt.decode(token.strip(), stored["jwt_secret"], algorithms=["HS256"])
            assert claims["sub"] == "alice"


async def test_the_tokens_of_the_dev_data_dir_are_accepted_by_that_dev(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with wedsync_dev(data) as dev:
        code, token, err = await run_cli(data, "token", "--user", "alice")  # no flag needed
        assert code == 0, err
        # the ready message's scrape hint names a command that runs from here (the venv's
        # script: `wedsync` alone is on the PATH only in an activated venv)
        assert dev.proc.stdout is not None
        hint = (await asyncio.wait_for(dev.proc.stdout.readline(), 10)).decode()
        m = re.search(r"Bearer \$\((\S+) metrics-token\)", hint)
        assert m, hint
        script = await asyncio.create_subprocess_exec(
            m.group(1),
            "metrics-token",
            env={**os.environ, "WEDSYNC_DATA_DIR": str(data)},
            stdout=asyncio.subprocess.PIPE,
        )
        scrape_token = (await asyncio.wait_for(script.communicate(), 60))[0].decode().strip()
        async with httpx.AsyncClient(base_url=dev.url) as client:
            r = await client.post(
                "/api/weddings",
                headers={"Authorization": f"Bearer {token.strip()}"},
                json={"name": "A & S", "date": "2027-06-12", "timezone": "Europe/London"},
            )
            assert r.status_code == 201, r.text
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {scrape_token}"})
            assert r.status_code == 200
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0


async def test_a_configured_secret_needs_no_data_dir(tmp_path: Path) -> None:
    secret = "s" * 48
    code, token, err = await run_cli(
        tmp_path / "none", "token", "--user", "alice", WEDSYNC_JWT_SECRET=secret
    )
    assert code == 0, err
    assert jwt.decode(token.strip(), secret, algorithms=["HS256"])["sub"] == "alice"
    code, admin, err = await run_cli(tmp_path / "none", "admin-token", WEDSYNC_ADMIN_TOKEN="adm")
    assert (code, admin.strip()) == (0, "adm")
    assert not (tmp_path / "none").exists()


async def run_cli_in(cwd: Path, *args: str) -> tuple[int, str, str]:
    """``wedsync ARGS`` run in ``cwd`` with no WEDSYNC_* set: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- the README's "Try it", as written ------------------------------------------------------


def readme_try_it() -> str:
    """The shell blocks of the README's "Try it" section, in order, as one script."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL))


async def test_the_readme_try_it_steps_work_as_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with wedsync_dev(data) as dev:
        port = dev.url.rsplit(":", 1)[1]
        # only the port (the README's is 8000) and where the venv is differ from the text
        script = readme_try_it().replace("localhost:8000", f"localhost:{port}")
        script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            cwd=tmp_path,
            env={**env, "WEDSYNC_DATA_DIR": str(data)},  # the dev's data dir, as in its shell
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert '{"events":[],"last_seq":0,"next_after_seq":null}' in text  # a new wedding
        assert '"type":"welcome"' in text
        assert '"type":"ack","id":"m-1","seq":1' in text
        assert '"data":{"text":"hello"}' in text  # the message, as an event
        assert "EventFrame(seq=2" in text and "'hello again'" in text  # the Python client
        dev.proc.terminate()
        assert await asyncio.wait_for(dev.proc.wait(), 60) == 0


async def test_a_worker_stopped_while_it_waits_for_its_services_exits(tmp_path: Path) -> None:
    """SIGTERM while NATS is not there (a supervisor that died took it along; nats-py
    retries its first connect): the worker exits at once instead of waiting for it forever
    (an orphan that held its parent's pipes open, and so a test's ``wait()``, once)."""
    from wedsync.embedded.process import free_port

    nowhere = free_port()
    proc = await spawn_cli(
        tmp_path / "data",
        "worker",
        "notifications",
        WEDSYNC_NATS_URL=f"nats://127.0.0.1:{nowhere}",
        WEDSYNC_DATABASE_URL=f"postgresql://wedsync@127.0.0.1:{nowhere}/wedsync",
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(60):
            while b"nats: encountered error" not in await proc.stderr.readline():
                assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0
        assert "wedsync worker notifications: stopped before it was up" in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
