"""An `epoch` pasted into the WebSocket URL as it is, unencoded, resumes like an encoded one:
today's epochs are URL-safe, and the `+00:00` form of earlier releases (which a URL turns
into ` 00:00`) still names the same life of the stream."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
import websockets

from tests.kits.world import World, connect, recv_type, send

pytestmark = pytest.mark.asyncio


async def resume_with(world: World, token: str, after: int, epoch_in_url: str) -> dict[str, object]:
    url = world.base.replace("http", "ws", 1) + (
        f"/ws/weddings/{world.wedding}?token={token}&after_seq={after}&epoch={epoch_in_url}"
    )
    async with websockets.connect(url) as ws:
        replayed = [(await recv_type(ws, "event"))["seq"] for _ in range(2)]
        resumed = await recv_type(ws, "resumed")
    assert len(replayed) == 2
    return resumed


async def test_an_unencoded_epoch_in_the_url_resumes(world: World) -> None:
    token = await world.join(world.couple)
    ws = await connect(world.base, world.wedding, token)
    try:
        welcome = await recv_type(ws, "welcome")
        epoch, start = welcome["epoch"], welcome["last_seq"]
        assert re.fullmatch(r"[0-9T:.\-]+Z", epoch), epoch  # nothing a URL would change
        for i in range(2):
            await send(ws, type="message", id=f"m{i}", channel="chat", data={"i": i})
            await recv_type(ws, "ack")
    finally:
        await ws.close()
    legacy = epoch.removesuffix("Z") + "+00:00"  # what earlier releases sent
    for pasted in (epoch, legacy, quote(legacy, safe="")):
        resumed = await resume_with(world, token, start, pasted)
        assert resumed["recovered"] is True, pasted
        assert resumed["epoch"] == epoch
