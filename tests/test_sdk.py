"""The TypeScript SDK (sdk/js, ``@wedsync/client``) against a real system.

Two `wedsync api` processes (the module's gateways), the session's NATS and PostgreSQL and
a conflicts worker; the SDK's node tests: its unit tests (the fold vectors made by the
Python fold, the pure logic), then test/integration/room.test.mjs with two members in one
wedding: acked sends, changes converging with ``/state``, a rejection rebased, a resume
after a server-side close with the network gone, a rejoin after the session ended.
Skipped only where there is no ``node`` (or ``npm``) on PATH.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from config.settings import Settings
from tests.kits.world import World, worker_process

JS = Path(__file__).resolve().parent.parent / "sdk" / "js"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not on PATH (the SDK needs Node 20+)"
)


async def run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a command in sdk/js; its output, or a failure that shows it."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=JS,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-6000:]}"
    return text


@pytest_asyncio.fixture(scope="module")
async def built() -> None:
    """node_modules from the lockfile (only when missing), then a fresh build."""
    assert NPM is not None
    if not (JS / "node_modules" / "typescript" / "package.json").exists():
        await run(NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error")
    await run(NPM, "run", "build", "--silent")


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings, gateways: list[str]) -> AsyncIterator[None]:
    """After the gateways: they declare the streams its consumers are made on."""
    async with worker_process(settings, "conflicts"):
        yield


def node_flags() -> list[str]:
    """Node 20 has its WebSocket behind a flag (from 22 on it is there by default)."""
    assert NODE is not None
    version = subprocess.run(
        [NODE, "-p", "process.versions.node"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    major = int(version.split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


async def test_unit_tests_fold_the_python_vectors(built: None) -> None:
    assert NODE is not None
    out = await run(NODE, "--test", "test/unit/")
    assert "# fail 0" in out and "fold: random history 0" in out


async def test_two_members_through_the_sdk_against_real_gateways(
    built: None, conflicts_worker: None, world: World, gateways: list[str], settings: Settings
) -> None:
    assert NODE is not None
    planner = await world.add("planner")
    jwt = {
        u: world.auth(u)["Authorization"].removeprefix("Bearer ") for u in (world.couple, planner)
    }
    env = {
        "WEDSYNC_SDK_BASES": ",".join(gateways),
        "WEDSYNC_SDK_WEDDING": world.wedding,
        "WEDSYNC_SDK_USERS": ",".join(f"{u}={t}" for u, t in jwt.items()),
        "WEDSYNC_SDK_ADMIN": settings.to_env()["WEDSYNC_ADMIN_TOKEN"],
    }
    out = await run(
        NODE,
        *node_flags(),
        "--test",
        "--test-timeout=30000",
        "test/integration/",
        env=env,
        timeout=90,
    )
    passed = re.search(r"^# pass (\d+)$", out, re.MULTILINE)
    assert "# fail 0" in out and passed is not None and int(passed[1]) >= 7, out[-4000:]
