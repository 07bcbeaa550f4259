"""Presence over time: idle/away from inactivity, and no ghosts after a gateway is killed."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from config.settings import Settings
from tests.kits.world import (
    World,
    connect,
    gateway_processes,
    recv,
    recv_type,
    send,
    worker_process,
)

TIMINGS = {
    "WEDSYNC_PRESENCE_IDLE_AFTER": "0.6",
    "WEDSYNC_PRESENCE_AWAY_AFTER": "1.2",
    "WEDSYNC_PRESENCE_GRACE": "0.5",
    "WEDSYNC_PRESENCE_TTL": "2",
    "WEDSYNC_PRESENCE_HEARTBEAT": "0.3",
}


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return TIMINGS


async def statuses_of(ws: Any, user: str, count: int, timeout: float = 10) -> list[str]:
    """The next ``count`` statuses shown for ``user`` in presence diffs."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while len(seen) < count:
            f = await recv_type(ws, "presence_diff", timeout)
            for u in f["updates"]:
                if u["user_id"] == user:
                    seen += [c["status"] for c in u["connections"]]
    return seen


async def test_quiet_member_goes_idle_then_away_and_comes_back(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    watcher = await connect(gateways[0], world.wedding, await world.join(world.couple))
    quiet = await connect(gateways[1], world.wedding, await world.join(planner))
    try:
        await recv(watcher)
        await recv(quiet)
        started = time.monotonic()
        assert await statuses_of(watcher, planner, 2) == ["idle", "away"]
        assert time.monotonic() - started >= 1.0  # not before the away threshold
        await send(quiet, type="message", id="back", channel="chat", data={"text": "here"})
        assert await statuses_of(watcher, planner, 1) == ["active"]
        await send(quiet, type="presence", status="busy")  # chosen: the server keeps it
        assert await statuses_of(watcher, planner, 1) == ["busy"]
    finally:
        await watcher.close()
        await quiet.close()


async def test_killed_gateway_leaves_no_ghosts(
    settings: Settings, world: World, gateways: list[str]
) -> None:
    vendor = await world.add("vendor")
    watcher = await connect(gateways[0], world.wedding, await world.join(world.couple))
    async with (
        worker_process(settings, "presence", TIMINGS),
        gateway_processes(settings, 1, TIMINGS) as [(doomed_url, doomed)],
    ):
        await recv(watcher)
        ws = await connect(doomed_url, world.wedding, await world.join(vendor))
        await recv(ws)
        f = await recv_type(watcher, "presence_diff")
        assert f["joins"][0]["user_id"] == vendor
        doomed.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        async with asyncio.timeout(30):
            while True:
                f = await recv_type(watcher, "presence_diff", 30)
                if any(u["user_id"] == vendor for u in f["leaves"]):
                    break
        took = time.monotonic() - killed_at
        assert 1.5 <= took < 10  # after the TTL (2 s), well within 30 s
        await ws.close()
    await watcher.close()
