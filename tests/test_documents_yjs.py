"""Stock ``yjs`` + ``y-websocket`` (tests/yjs, from its lockfile) against the document
socket: a Node provider on one gateway and a pycrdt client on the other edit one document
concurrently and converge, see each other's awareness, and the text is the snapshot's after
compaction; a forbidden document closes the provider for good (4503, no reconnect loop).
Skipped only where there is no ``node`` (or ``npm``) on PATH."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from config.settings import Settings
from tests.kits.world import World, eventually, worker_process
from tests.kits.ydoc import YClient, api, create_document, server_url
from tests.test_sdk import node_flags

JS = Path(__file__).resolve().parent / "yjs"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(NODE is None or NPM is None, reason="no node and npm on PATH")


@pytest_asyncio.fixture(scope="module")
async def installed() -> None:
    """yjs and y-websocket from the lockfile (only when missing)."""
    assert NPM is not None
    if (JS / "node_modules" / "y-websocket" / "package.json").exists():
        return
    proc = await asyncio.create_subprocess_exec(
        NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", cwd=JS
    )
    assert await asyncio.wait_for(proc.wait(), 300) == 0


@pytest_asyncio.fixture(scope="module")
async def documents_worker(settings: Settings, gateways: list[str]) -> AsyncIterator[None]:
    async with worker_process(settings, "documents"):
        yield


async def line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert raw, "the node client exited"
    out: dict[str, Any] = json.loads(raw)
    assert "error" not in out, out
    return out


async def test_yjs_and_pycrdt_converge_across_processes(
    world: World, gateways: list[str], installed: None, documents_worker: None
) -> None:
    assert NODE is not None
    planner = await world.add("planner")
    assert (await create_document(world, world.couple, "notes")).status_code == 201
    assert (await create_document(world, planner, f"vows:{planner}")).status_code == 201
    args = {
        "serverUrl": server_url(gateways[0], world.wedding),
        "room": "notes",
        "token": await world.join(world.couple),
        "insert": "written in yjs. ",
        "waitFor": "pycrdt",
        "forbidden": f"vows:{planner}",
    }
    proc = await asyncio.create_subprocess_exec(
        NODE,
        *node_flags(),
        "interop.mjs",
        json.dumps(args),
        cwd=JS,
        env=dict(os.environ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        refused = await line(proc)
        assert refused == {"forbidden": 4503, "reconnecting": False}
        async with YClient(gateways[1], world.wedding, "notes", await world.join(planner)) as py:
            await line(proc)  # the provider synced: now both edit at once
            await py.edit(0, "written in pycrdt. ")
            await py.announce({"user": {"name": "pycrdt"}})
            done = await line(proc)
            await py.until(lambda: "yjs" in str(py))
            assert done["text"] == str(py)
            assert {"user": {"name": "pycrdt"}} in done["peers"]
            await py.until(lambda: done["clientID"] in py.awareness)
            assert py.awareness[done["clientID"]]["user"] == {"name": "yjs in node"}
            text = str(py)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        if await asyncio.wait_for(proc.wait(), 30) is None:
            proc.kill()

    async def compacted() -> int | None:
        r = await api(world, world.couple, "GET", "/notes")
        seq: int = r.json()["snapshot_seq"]
        versions = (await api(world, world.couple, "GET", "/notes/versions")).json()["versions"]
        return (
            seq
            if seq and versions and sum(sum(v["authors"].values()) for v in versions) >= 2
            else None
        )

    seq = await eventually(compacted, 20)
    snapshot = (await api(world, world.couple, "GET", f"/notes/versions/{seq}")).json()
    assert snapshot["text"] == text
