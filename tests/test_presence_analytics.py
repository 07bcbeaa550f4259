"""Presence analytics: connected and active minutes per member per local day."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from config.settings import Settings
from runtime.connections import Connections
from runtime.presence import Mirror, PresenceTable, presence_bucket
from tests.kits.world import World, connect, eventually, recv, send, worker_process
from workers.presence import PresenceAnalytics


def statuses(table: PresenceTable, wedding: str) -> dict[str, str]:
    return {r.user_id: r.status.value for r in table.room(wedding) if r.disconnected_at is None}


async def analytics(world: World, user: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.base) as c:
        return await c.get(
            f"/api/weddings/{world.wedding}/presence/analytics",
            headers=world.auth(user),
            params=params,
        )


def minutes(body: dict[str, Any]) -> dict[str, dict[str, tuple[int, int]]]:
    """date → user → (active, present)."""
    return {
        d["date"]: {m["user_id"]: (m["active_minutes"], m["present_minutes"]) for m in d["members"]}
        for d in body["days"]
    }


async def test_minutes_per_member_per_local_day(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.patch(
            f"/api/weddings/{world.wedding}",
            headers=world.auth(world.couple),
            json={"timezone": "Europe/London"},
        )
        assert r.status_code == 200, r.text
    planner = await world.add("planner")
    kv = await presence_bucket(conns.js, replicas=1)
    couple_ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    planner_ws = await connect(gateways[1], world.wedding, await world.join(planner))
    try:
        await recv(couple_ws)
        await recv(planner_ws)
        async with Mirror(kv, lambda change: None) as mirror:
            sampler = PresenceAnalytics(mirror.table, conns.pool, every=3600)
            await eventually(lambda: len(statuses(mirror.table, world.wedding)) == 2)
            # 22:30 UTC on 13 June is 23:30 in London: still the 13th there
            t0 = dt.datetime(2026, 6, 13, 22, 30, 5, tzinfo=dt.UTC)
            for at in (t0, t0 + dt.timedelta(seconds=30), t0 + dt.timedelta(seconds=60)):
                await sampler.sample(at)  # two samples in one minute count it once

            await send(planner_ws, type="presence", status="away")
            await eventually(lambda: statuses(mirror.table, world.wedding).get(planner) == "away")
            await sampler.sample(t0 + dt.timedelta(minutes=2))
            # 23:31 UTC is 00:31 on the 14th in London
            await sampler.sample(t0 + dt.timedelta(hours=1, minutes=1))
    finally:
        await couple_ws.close()
        await planner_ws.close()

    r = await analytics(world, world.couple, **{"from": "2026-06-01", "to": "2026-06-30"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Europe/London"
    assert minutes(body) == {
        "2026-06-13": {world.couple: (3, 3), planner: (2, 3)},
        "2026-06-14": {world.couple: (1, 1), planner: (0, 1)},
    }
    names = {m["user_id"]: m["role"] for d in body["days"] for m in d["members"]}
    assert names == {world.couple: "couple", planner: "planner"}
    # the planner may read it too; a range outside has no days
    r = await analytics(world, planner, **{"from": "2026-07-01", "to": "2026-07-02"})
    assert r.status_code == 200 and r.json()["days"] == []


async def test_only_couple_and_planner_read_analytics(world: World) -> None:
    guest, vendor = await world.add("guest"), await world.add("vendor")
    for user in (guest, vendor):
        r = await analytics(world, user)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await analytics(world, "stranger-" + world.couple)
    assert r.status_code == 404
    r = await analytics(world, world.couple, **{"from": "2026-06-02", "to": "2026-06-01"})
    assert r.status_code == 422 and r.json()["code"] == "invalid"
    r = await analytics(world, world.couple, **{"from": "2020-01-01", "to": "2026-06-01"})
    assert r.status_code == 422


async def test_presence_worker_records_todays_minutes(
    world: World, gateways: list[str], settings: Settings
) -> None:
    ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    try:
        await recv(ws)
        async with worker_process(settings, "presence", {"WEDSYNC_PRESENCE_SAMPLE_EVERY": "0.2"}):
            async with asyncio.timeout(20):
                while True:
                    r = await analytics(world, world.couple)
                    assert r.status_code == 200
                    today = minutes(r.json())
                    if today:
                        break
                    await asyncio.sleep(0.1)
    finally:
        await ws.close()
    [(day, members)] = today.items()
    now = dt.datetime.now(dt.UTC)  # the wedding's zone is UTC
    assert day in {now.date().isoformat(), (now - dt.timedelta(minutes=1)).date().isoformat()}
    [(user, (active, present))] = members.items()
    assert user == world.couple and 1 <= active == present <= 2  # a minute may have turned
