"""A conflicts worker killed at any point and restarted applies every change exactly once."""

from __future__ import annotations

import signal

import httpx

from config.settings import Settings
from tests.kits.statekit import Member, wedding_state
from tests.kits.world import World, connect, recv, worker_process

N = 80


async def test_sigkill_mid_stream_applies_each_change_once(
    world: World, gateways: list[str], settings: Settings
) -> None:
    ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    await recv(ws)
    a = Member(ws, world.couple)
    async with worker_process(settings, "conflicts") as first:
        await a.ack(await a.change("tasks", "t", "create", {"title": "v"}))
        await a.event("entity.created", entity_id="t")
        for i in range(N):  # all based on version 1: each overwrites the last (LWW)
            await a.change("tasks", "t", "update", {"title": f"v{i}"}, base=1)
        await a.event("entity.updated", entity_id="t", version=11)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    async with worker_process(settings, "conflicts"):
        last = await a.event("entity.updated", entity_id="t", version=N + 1, timeout=30)
    assert last["data"]["fields"]["title"] == f"v{N - 1}"
    assert len(a.acks) == N + 1  # every change was acked as durable before the kill

    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(world.couple),
            params={"limit": 1000},
        )
        history = [e["event"] for e in r.json()["events"]]
        audit = await c.get(
            f"/api/weddings/{world.wedding}/audit",
            headers=world.auth(world.couple),
            params={"limit": 200},
        )
    versions = [
        e["data"]["version"]
        for e in history
        if e["type"].startswith("entity.") and e["data"]["entity_id"] == "t"
    ]
    assert versions == list(range(1, N + 2))  # none missing, none twice
    changed = [e for e in audit.json()["items"] if e["action"] == "entity_changed"]
    assert len(changed) == N + 1
    state = await wedding_state(world, world.couple)
    assert state["entities"]["tasks"]["t"] == {"version": N + 1, "fields": last["data"]["fields"]}
