"""The Python client (client/) against two real gateway processes."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from client import Backoff, ClientClosed, ServerError, State, WeddingClient
from streams.protocol import ResumedFrame
from tests.world import World


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(base=0.1, cap=5.0, rng=random.Random(7))
    assert [b.ceiling(n) for n in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    delays = [b.delay(6) for _ in range(200)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert min(delays) < 1.0 < 4.0 < max(delays)  # spread over the whole range, not lockstep


async def history(world: World, base: str, after: int) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/events",
                        params={"after_seq": after, "limit": 1000},
                        headers=world.auth(world.couple))  # fmt: skip
        assert r.status_code == 200, r.text
        events: list[dict[str, object]] = r.json()["events"]
        return events


async def test_send_is_acked_with_the_seq_others_receive(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    async with (
        WeddingClient(gateways[0], world.wedding, await world.join(world.couple)) as a,
        WeddingClient(gateways[1], world.wedding, await world.join(planner)) as b,
    ):
        assert a.state is State.OPEN and a.welcome is not None and a.welcome.role == "couple"
        seq = await a.send("chat", {"text": "menu?"})
        got = await b.next_event()
        assert got.seq == seq and got.event.data == {"text": "menu?"}
        assert (await a.next_event()).seq == seq  # the sender too
        assert a.last_seq == b.last_seq == seq


async def test_refused_messages_raise_the_server_code(world: World, gateways: list[str]) -> None:
    guest = await world.add("guest")
    async with WeddingClient(gateways[0], world.wedding, await world.join(guest)) as g:
        with pytest.raises(ServerError) as refused:
            await g.send("budget", {"amount": 1})
        assert refused.value.code == "forbidden"
        assert await g.send("chat", {"text": "still fine"}) > 0


async def test_reconnects_by_itself_and_delivers_each_missed_event_once(
    world: World, gateways: list[str]
) -> None:
    family = await world.add("family")
    states: list[State] = []
    fast = Backoff(base=0.05, cap=0.2)
    async with (
        WeddingClient(gateways[0], world.wedding, await world.join(world.couple)) as sender,
        WeddingClient(gateways[1], world.wedding, await world.join(family), backoff=fast,
                      on_state=states.append) as c,
    ):  # fmt: skip
        first = await sender.send("chat", {"i": -1})
        assert (await c.next_event()).seq == first
        await c.disconnect()  # as a dropped network would
        sent = [await sender.send("chat", {"i": i}) for i in range(200)]
        received: list[int] = []
        resumed: list[ResumedFrame] = []
        async with asyncio.timeout(15):
            async for item in c.events():
                if isinstance(item, ResumedFrame):
                    resumed.append(item)
                    continue
                received.append(item.seq)
                if len(received) == 200:
                    break
        assert received == sent  # in order, every one, none twice
        assert resumed and resumed[0].recovered and resumed[0].after_seq >= first
        assert State.RECONNECTING in states and states[-1] is State.OPEN
        assert c.connects == 2


async def test_unacknowledged_sends_are_resent_after_reconnect_and_stored_once(
    world: World, gateways: list[str]
) -> None:
    fast = Backoff(base=0.05, cap=0.2)
    async with WeddingClient(gateways[0], world.wedding, await world.join(world.couple),
                             backoff=fast) as c:  # fmt: skip
        start = c.last_seq or 0
        sends = [asyncio.create_task(c.send("chat", {"n": n}, id=f"n{n}")) for n in range(30)]
        await asyncio.sleep(0)  # let them start writing, then cut the connection mid-way
        assert c.unacknowledged > 0
        await c.disconnect()
        seqs = await asyncio.wait_for(asyncio.gather(*sends), 15)
        again = await c.send("chat", {"n": 0}, id="n0")  # a late duplicate: same seq
        assert c.connects == 2 and c.unacknowledged == 0
    assert again == seqs[0]
    assert len(set(seqs)) == 30
    stored = await history(world, gateways[1], start)
    assert sorted(e["seq"] for e in stored) == sorted(seqs)  # type: ignore[type-var]
    assert sorted(e["event"]["data"]["n"] for e in stored) == list(range(30))  # type: ignore[index]


async def test_terminal_close_ends_the_client_and_fails_pending_sends(
    world: World, gateways: list[str]
) -> None:
    vendor = await world.add("vendor")
    states: list[State] = []
    c = WeddingClient(gateways[1], world.wedding, await world.join(vendor), on_state=states.append)
    await c.start()
    try:
        await world.remove(vendor)
        async with asyncio.timeout(5):
            with pytest.raises(ClientClosed) as closed:
                async for _ in c.events():
                    pass
        assert closed.value.code is not None and closed.value.code >= 4500
        assert c.state is State.CLOSED and State.RECONNECTING not in states
        with pytest.raises(ClientClosed):
            await c.send("chat", {"text": "too late"})
    finally:
        await c.close()


async def test_a_refused_session_raises_at_start(world: World, gateways: list[str]) -> None:
    with pytest.raises(ClientClosed) as refused:
        async with WeddingClient(gateways[0], world.wedding, "not-a-session"):
            pass
    assert refused.value.code == 4500


async def test_starting_from_a_seq_replays_history_first(world: World, gateways: list[str]) -> None:
    async with WeddingClient(gateways[0], world.wedding, await world.join(world.couple)) as a:
        start = a.last_seq or 0
        seqs = [await a.send("timeline", {"k": k}) for k in range(5)]
    token = await world.join(world.couple)
    async with WeddingClient(gateways[1], world.wedding, token, after_seq=start) as b:
        replayed = [(await b.next_event()).seq for _ in seqs]
        assert replayed == seqs
