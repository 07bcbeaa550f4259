"""Admission control: a gateway past its capacity refuses frames with ``overloaded`` and a
``retry_after`` instead of queueing them; what it refuses is not stored, what it acks is.

The overload is made certain by configuration (no publishes allowed in flight; a lag
threshold every loop exceeds), so the test asserts behaviour, not timing. How well it
holds latency at 2x capacity is measured by `python -m bench overload`.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from tests.kits.world import World, connect, gateway_processes, recv, recv_type, send


async def history(world: World) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(world.couple),
            params={"limit": 1000},
        )
        assert r.status_code == 200, r.text
        return [e["event"] for e in r.json()["events"]]


async def frames_until(ws: ClientConnection, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Read until every frame id in ``ids`` got its ack or error; id -> that frame."""
    out: dict[str, dict[str, object]] = {}
    while ids - out.keys():
        f = await recv(ws)
        if f["type"] in ("ack", "error") and f.get("id") in ids:
            out[f["id"]] = f
    return out


async def test_nothing_in_flight_allowed_refuses_every_store(settings: Settings) -> None:
    env = {"WEDSYNC_WS_MAX_INFLIGHT": "0"}
    async with gateway_processes(settings, 1, env) as [(base, _)]:
        world = World(settings, base)
        await world.create()
        ws = await connect(base, world.wedding, await world.join(world.couple))
        await recv_type(ws, "welcome")
        ids = {f"m{i}" for i in range(5)}
        for i in sorted(ids):
            await send(ws, type="message", id=i, channel="chat", data={"text": i})
        await send(
            ws,
            type="change",
            id="c1",
            entity="tasks",
            entity_id="t1",
            op="create",
            fields={"title": "x"},
        )
        got = await frames_until(ws, ids | {"c1"})
        assert {f["code"] for f in got.values()} == {"overloaded"}
        assert all(float(f["retry_after"]) > 0 for f in got.values())
        await send(ws, type="ping")  # the socket itself is fine
        assert (await recv_type(ws, "pong"))["type"] == "pong"
        assert await history(world) == []
        await ws.close()


async def test_lagging_loop_sheds_part_and_stores_exactly_what_it_acks(
    settings: Settings,
) -> None:
    env = {"WEDSYNC_WS_MAX_LAG": "0.000000001"}  # every timer is later than that
    async with gateway_processes(settings, 1, env) as [(base, _)]:
        world = World(settings, base)
        await world.create()
        ws = await connect(base, world.wedding, await world.join(world.couple))
        await recv_type(ws, "welcome")
        # the share admitted falls on every late tick and grows back on a punctual one (a
        # timer may fire on time even here): bursts until the gateway has refused some
        got: dict[str, dict[str, Any]] = {}
        for _ in range(10):
            ids = {uuid.uuid4().hex[:8] for _ in range(60)}
            for i in ids:
                await send(ws, type="message", id=i, channel="chat", data={"text": i})
            got |= await frames_until(ws, ids)
            if any(f["type"] == "error" for f in got.values()):
                break
        refused = {i for i, f in got.items() if f["type"] == "error"}
        acked = {i for i, f in got.items() if f["type"] == "ack"}
        assert refused and {got[i]["code"] for i in refused} == {"overloaded"}
        assert all(float(got[i]["retry_after"]) >= 0.5 for i in refused)
        stored = {e["data"]["text"] for e in await history(world)}
        assert stored == acked
        await ws.close()
