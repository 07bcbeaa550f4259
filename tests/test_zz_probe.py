"""Probe: how often does a removal during the handshake go unnoticed (old code)."""
from __future__ import annotations
import asyncio
import pytest
import websockets
from tests.world import World, connect, recv, recv_type

pytestmark = pytest.mark.asyncio

async def test_probe(world: World, gateways: list[str]) -> None:
    missed = 0
    n = 40
    for i in range(n):
        planner = await world.add("planner")
        token = await world.join(planner)
        async def handshake():
            try:
                ws = await connect(gateways[1], world.wedding, token)
                await recv_type(ws, "welcome")
                return ws
            except websockets.ConnectionClosed:
                return None
        ws, _ = await asyncio.gather(handshake(), world.remove(planner))
        if ws is None:
            continue
        try:
            while True:
                await recv(ws, 3)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            missed += 1
        await ws.close()
    print("missed", missed, "of", n)
    assert missed == 0
