"""The Python client (client/) against two real gateway processes."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from client import Backoff, ClientClosed, ServerError, State, WeddingClient
from client.retry import RetryGate
from streams.protocol import ResumedFrame
from tests.kits.world import World, eventually


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(base=0.1, cap=5.0, rng=random.Random(7))
    assert [b.ceiling(n) for n in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    delays = [b.delay(6) for _ in range(200)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert min(delays) < 1.0 < 4.0 < max(delays)  # spread over the whole range, not lockstep


async def history(world: World, base: str, after: int) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            params={"after_seq": after, "limit": 1000},
            headers=world.auth(world.couple),
        )
        assert r.status_code == 200, r.text
        events: list[dict[str, object]] = r.json()["events"]
        return events


async def test_send_is_acked_with_the_seq_others_receive(world: World, gateways: list[str]) -> None:
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
        WeddingClient(
            gateways[1],
            world.wedding,
            await world.join(family),
            backoff=fast,
            on_state=states.append,
        ) as c,
    ):
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
    async with WeddingClient(
        gateways[0], world.wedding, await world.join(world.couple), backoff=fast
    ) as c:
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


# -- backing off when the server cannot store (client/retry.py) ----------------------------


def test_the_retry_gate_holds_everything_behind_one_probe() -> None:
    gate = RetryGate(Backoff(base=1.0, cap=8.0, rng=random.Random(3)))
    for i in range(5):  # five frames in flight when storage went away
        gate.refused(f"m{i}", None, now=100.0)
    assert gate.shut and gate.rounds == 1 and list(gate.held) == [f"m{i}" for i in range(5)]
    first_wait = gate.reopen_at
    assert 100.0 <= first_wait <= 101.0  # one wait for the round, not one per frame
    assert gate.next_probe(first_wait - 0.001) is None
    assert gate.next_probe(first_wait) == "m0" and gate.next_probe(first_wait) is None
    gate.refused("m0", None, now=first_wait + 0.01)  # still down: the next wait is longer
    assert gate.rounds == 2 and gate.reopen_at <= first_wait + 0.01 + 2.0
    gate.hold("m5")  # sent meanwhile: held behind the others
    assert gate.next_probe(gate.reopen_at) == "m1"
    assert gate.acked("m1") == ["m2", "m3", "m4", "m0", "m5"]  # stored: the rest goes out
    assert not gate.shut and gate.rounds == 0


def test_retry_after_is_the_least_wait() -> None:
    gate = RetryGate(Backoff(base=0.5, cap=10.0, rng=random.Random(1)))
    gate.refused("m0", 3.0, now=0.0)
    assert 3.0 <= gate.reopen_at <= 3.5
    assert gate.next_probe(2.9) is None and gate.next_probe(3.5) == "m0"


class StandIn:
    """A small WebSocket server standing where a gateway stands, so that what the client
    sends can be counted exactly: it welcomes, and acks each message id with one seq (a
    re-sent id gets the same one) — or, while ``refusing``, answers ``code``."""

    def __init__(self, code: str = "unavailable", retry_after: float | None = None) -> None:
        self.code, self.retry_after = code, retry_after
        self.refusing = True
        self.frames: list[tuple[float, str]] = []  # (monotonic time, id) of each message frame
        self.seqs: dict[str, int] = {}
        self.port = 0
        self._server: Server | None = None

    async def _serve(self, ws: ServerConnection) -> None:
        await ws.send(
            json.dumps(
                {
                    "type": "welcome",
                    "session_id": "s",
                    "user_id": "u",
                    "role": "couple",
                    "permissions": {},
                    "last_seq": 0,
                    "epoch": "e",
                }
            )
        )
        async for raw in ws:
            frame = json.loads(raw)
            now = time.monotonic()
            self.frames.append((now, frame["id"]))
            if self.refusing:
                await ws.send(
                    json.dumps(
                        {
                            "type": "error",
                            "id": frame["id"],
                            "code": self.code,
                            "message": "not stored",
                            "retry_after": self.retry_after,
                        }
                    )
                )
            else:
                seq = self.seqs.setdefault(frame["id"], len(self.seqs) + 1)
                await ws.send(json.dumps({"type": "ack", "id": frame["id"], "seq": seq}))

    async def __aenter__(self) -> StandIn:
        self._server = await serve(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_an_outage_costs_a_few_probes_not_a_storm_and_every_send_is_acked_after() -> None:
    """60 messages sent over a 6 s outage: the old client sent each again every 0.5 s
    (~400 frames); behind the gate it is the first refused frame plus one probe per wait."""
    async with StandIn() as server:
        retry = Backoff(base=0.5, cap=10.0, rng=random.Random(11))
        async with WeddingClient(
            f"http://127.0.0.1:{server.port}", "w", "t", retry_backoff=retry
        ) as c:
            sends = []
            for n in range(60):
                sends.append(asyncio.create_task(c.send("chat", {"n": n}, id=f"n{n}")))
                await asyncio.sleep(0.1)
            assert c.unacknowledged == 60
            during = len(server.frames)
            server.refusing = False  # the service is back
            seqs = await asyncio.wait_for(asyncio.gather(*sends), 30)
    assert during <= 12, server.frames  # 1 refused + a probe per growing wait (~5 in 6 s)
    assert sorted(seqs) == list(range(1, 61))  # every one acked, each once
    assert {i for _, i in server.frames} == {f"n{n}" for n in range(60)}  # with its own id
    assert len(server.frames) <= 60 + during  # after the outage: each held frame once


async def test_overloaded_is_retried_no_sooner_than_retry_after() -> None:
    async with (
        StandIn("overloaded", retry_after=1.0) as server,
        WeddingClient(f"http://127.0.0.1:{server.port}", "w", "t") as c,
    ):
        send = asyncio.create_task(c.send("chat", {"text": "hi"}, id="m1"))
        await eventually(lambda: len(server.frames) == 1)
        refused_at = server.frames[0][0]
        server.refusing = False
        assert await asyncio.wait_for(send, 10) == 1
    assert [i for _, i in server.frames] == ["m1", "m1"]
    assert server.frames[1][0] - refused_at >= 1.0
