"""Wedding state through the real path: change frames → WEDSYNC_CHANGES → the conflicts
worker process → PostgreSQL and events → every member's folded state == /state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from config.settings import Settings
from tests.kits.statekit import Member, wedding_state, without_empty
from tests.kits.world import World, connect, recv, worker_process


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(settings, "conflicts", {"WEDSYNC_APPROVAL_THRESHOLD": "100000"}):
        yield


async def member(world: World, gateway: str, user: str) -> Member:
    ws = await connect(gateway, world.wedding, await world.join(user))
    welcome = await recv(ws)
    assert welcome["type"] == "welcome"
    return Member(ws, user)


async def test_create_update_delete_converge(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    planner = await world.add("planner")
    a = await member(world, gateways[0], world.couple)
    b = await member(world, gateways[1], planner)
    cid = await a.change("tasks", "t1", "create", {"title": "Book florist"})
    ack = await a.ack(cid)
    assert ack["type"] == "ack" and ack["seq"] > 0
    created = await b.event("entity.created", entity_id="t1")
    assert created["data"]["fields"] == {
        "title": "Book florist",
        "assignee": None,
        "due": None,
        "done": False,
    }
    assert created["data"]["version"] == 1 and created["actor"]["user_id"] == world.couple
    await b.change("tasks", "t1", "update", {"done": True}, base=1)
    done = await a.event("entity.updated", entity_id="t1")
    assert done["data"]["fields"]["done"] is True and done["data"]["version"] == 2
    await b.event("entity.updated", entity_id="t1")
    snapshot = await wedding_state(world, world.couple)
    assert snapshot["entities"]["tasks"] == a.state["tasks"] == b.state["tasks"]
    assert snapshot["seq"] == a.last_seq
    await a.change("tasks", "t1", "delete", base=2)
    await b.event("entity.deleted", entity_id="t1")
    assert without_empty((await wedding_state(world, planner))["entities"]) == {}
    assert without_empty(b.state) == {}
