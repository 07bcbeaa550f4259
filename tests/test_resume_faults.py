"""A resume whose NATS request is cut in flight (the batch direct gets of runtime/direct.py:
the wedding's head, then the missed events): the client still ends with every acked event
once, in order. The replay fails (the socket closes with 4002, "reconnect and resume"),
and a resume from the last seq the client saw completes once NATS is back.

Only the resuming gateway loses NATS (tests/kits/relay.py); the events are sent through
another one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from config.settings import Settings
from tests.kits.relay import Relay
from tests.kits.world import World, connect, recv, recv_type, running_gateways, send

N = 30
RETRY = 0.5  # the client's pause between two reconnects (as the SDK's backoff would)


async def _reconnect(url: str, world: World, token: str, after: int) -> ClientConnection:
    """Connect and resume after ``after``, again until the gateway takes the socket."""
    while True:
        try:
            return await connect(url, world.wedding, token, after=after)
        except (OSError, InvalidStatus):
            await asyncio.sleep(RETRY)


@dataclass
class Gateways:
    relay: Relay
    cut: str  # the gateway behind the relay
    other: str  # the one always on NATS


@pytest_asyncio.fixture(scope="module")
async def pair(settings: Settings) -> AsyncIterator[Gateways]:
    assert settings.nats.url is not None
    relay = Relay(settings.nats.url)
    async with (
        relay.serving() as relayed,
        running_gateways(settings, 1, {"WEDSYNC_NATS_URL": relayed}) as [cut_url],
        running_gateways(settings, 1) as [other_url],
    ):
        yield Gateways(relay, cut_url, other_url)


@pytest.mark.parametrize("nth", [1, 2], ids=["the head", "the missed events"])
async def test_a_resume_cut_off_mid_direct_get_still_delivers_every_event_once(
    settings: Settings, pair: Gateways, nth: int
) -> None:
    relay, cut_url, other_url = pair.relay, pair.cut, pair.other
    world = World(settings, other_url)
    await world.create()
    sender = await connect(other_url, world.wedding, await world.join(world.couple))
    # the room is open on the cut gateway first: the next direct gets it makes are the resume's
    watcher = await connect(cut_url, world.wedding, await world.join(world.couple))
    resumer: ClientConnection | None = None
    try:
        await recv_type(sender, "welcome")
        await recv_type(watcher, "welcome")
        acked: list[int] = []
        for i in range(N):
            await send(sender, type="message", id=f"cut-{i}", channel="chat", data={"i": i})
            acked.append((await recv_type(sender, "ack"))["seq"])

        relay.cut_after(b"$JS.API.DIRECT.GET", nth)
        token = await world.join(world.couple)
        resumer = await connect(cut_url, world.wedding, token, after=0)
        await asyncio.wait_for(relay.tripped.wait(), 10)  # the request went, no reply
        relay.restore()

        seen: list[int] = []
        closes: list[Any] = []
        async with asyncio.timeout(60):
            while seen != acked:
                try:
                    frame = await recv(resumer, 30)
                except ConnectionClosed as closed:
                    closes.append(closed.rcvd.code if closed.rcvd else None)
                    after = seen[-1] if seen else 0
                    resumer = await _reconnect(cut_url, world, token, after)
                    continue
                if frame["type"] == "event":
                    assert not seen or frame["seq"] > seen[-1], "a duplicate or out of order"
                    seen.append(frame["seq"])
        assert seen == acked  # every acked event, once, in order
        assert set(closes) <= {4002}, closes  # "reconnect and resume", nothing terminal
    finally:
        for ws in (sender, watcher, resumer):
            if ws is not None:
                await ws.close()
