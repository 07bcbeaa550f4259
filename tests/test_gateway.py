"""The realtime gateway with two real API processes on one NATS/PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.kits.world import World, connect, recv, recv_type, send

pytestmark = pytest.mark.asyncio


async def test_message_acked_on_one_process_arrives_on_the_other(
    world: World, gateways: list[str]
) -> None:
    vendor = await world.add("vendor")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b = await connect(gateways[1], world.wedding, await world.join(vendor))
    try:
        welcome = await recv(b)
        assert welcome["type"] == "welcome" and welcome["role"] == "vendor"
        assert welcome["permissions"]["budget"] == {"read": False, "write": False}
        await recv(a)
        await send(a, type="message", id="m1", channel="chat", data={"text": "hi"})
        # The sender gets the ack and its own event (in either order: the event may
        # reach the room before the publish acknowledgement returns).
        mine: dict[str, dict[str, object]] = {}
        while not {"ack", "event"} <= mine.keys():
            f = await recv(a)  # presence diffs (the vendor's join) may come in between
            mine[f["type"]] = f
        ack = mine["ack"]
        assert ack["id"] == "m1"
        assert mine["event"]["seq"] == ack["seq"]
        got = await recv_type(b, "event")
        assert got["seq"] == ack["seq"]
        assert got["event"]["data"] == {"text": "hi"}
        assert got["event"]["actor"] == {"user_id": world.couple, "role": "couple"}
    finally:
        await a.close()
        await b.close()


async def test_guest_sees_no_budget_and_may_not_write_it(world: World, gateways: list[str]) -> None:
    guest = await world.add("guest")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    g = await connect(gateways[1], world.wedding, await world.join(guest))
    try:
        await recv(a)
        await recv(g)
        await send(g, type="message", id="x", channel="budget", data={"amount": 1})
        err = await recv_type(g, "error")
        assert err["code"] == "forbidden" and err["id"] == "x"
        await send(a, type="message", id="b1", channel="budget", data={"amount": 5000})
        await send(a, type="message", id="c1", channel="chat", data={"text": "after"})
        chat_ack = None
        while chat_ack is None:
            f = await recv(a)
            if f["type"] == "ack" and f["id"] == "c1":
                chat_ack = f
        ev = await recv_type(g, "event")  # the first event the guest gets is the chat one
        assert ev["event"]["channel"] == "chat" and ev["seq"] == chat_ack["seq"]
    finally:
        await a.close()
        await g.close()


async def test_same_client_id_is_stored_once_even_across_reconnect(
    world: World, gateways: list[str]
) -> None:
    token = await world.join(world.couple)
    ws = await connect(gateways[0], world.wedding, token)
    await recv(ws)
    await send(ws, type="message", id="dup", channel="chat", data={"n": 1})
    first = await recv_type(ws, "ack")
    await send(ws, type="message", id="dup", channel="chat", data={"n": 1})
    second = await recv_type(ws, "ack")
    await ws.close()
    ws = await connect(gateways[1], world.wedding, token)
    try:
        await recv(ws)
        await send(ws, type="message", id="dup", channel="chat", data={"n": 1})
        third = await recv_type(ws, "ack")
    finally:
        await ws.close()
    assert first["seq"] == second["seq"] == third["seq"]


async def test_resume_gets_exactly_the_missed_events_then_live(
    world: World, gateways: list[str]
) -> None:
    family = await world.add("family")
    sender = await connect(gateways[0], world.wedding, await world.join(world.couple))
    await recv(sender)
    # a first event, so the resume position is a stored one (not 0: other modules purge
    # the shared stream's old events, and "from the very beginning" is then not recoverable)
    await send(sender, type="message", id="first", channel="chat", data={})
    first = (await recv_type(sender, "ack"))["seq"]
    token = await world.join(family)
    ws = await connect(gateways[1], world.wedding, token)
    welcome = await recv(ws)
    start = welcome["last_seq"]
    assert start == first
    await ws.close()

    sent: list[int] = []
    for i in range(1000):
        await send(sender, type="message", id=f"r{i}", channel="chat", data={"i": i})
    while len(sent) < 1000:
        f = await recv(sender)
        if f["type"] == "ack":
            sent.append(f["seq"])

    async def keep_sending() -> list[int]:
        more: list[int] = []
        for i in range(50):
            await send(sender, type="message", id=f"live{i}", channel="chat", data={"live": i})
        while len(more) < 50:
            f = await recv(sender)
            if f["type"] == "ack":
                more.append(f["seq"])
        return more

    ws = await connect(gateways[1], world.wedding, token, after=start)
    try:
        live_task = asyncio.create_task(keep_sending())
        seqs: list[int] = []
        resumed = None
        extra = await live_task
        expected = sorted(sent + extra)
        while len(seqs) < len(expected):
            f = await recv(ws)
            if f["type"] == "event":
                seqs.append(f["seq"])
            elif f["type"] == "resumed":
                resumed = f
        while resumed is None:  # all live events may have been stored before the resume began
            f = await recv(ws)
            assert f["type"] != "event", f  # nothing beyond the expected events
            if f["type"] == "resumed":
                resumed = f
        assert resumed["recovered"] is True
        assert seqs == expected  # in order, every one, none twice
        assert seqs[:1000] == sorted(sent)
    finally:
        await ws.close()
        await sender.close()


async def test_garbage_frames_get_errors_and_the_socket_keeps_working(
    world: World, gateways: list[str]
) -> None:
    ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    try:
        await recv(ws)
        for bad in [
            "not json",
            "[]",
            '{"type": "nope"}',
            '{"type": "message", "id": 5, "channel": "chat", "data": {}}',
            '{"type": "message", "id": "a", "channel": "moon", "data": {}}',
        ]:
            await ws.send(bad)
            assert (await recv_type(ws, "error"))["code"] == "invalid"
        await send(ws, type="message", id="big", channel="chat", data={"x": "y" * 100_000})
        assert (await recv_type(ws, "error"))["code"] == "too_large"
        await send(ws, type="ping")
        assert (await recv_type(ws, "pong"))["type"] == "pong"
    finally:
        await ws.close()


async def test_bad_token_is_refused_with_a_terminal_code(world: World, gateways: list[str]) -> None:
    ws = await connect(gateways[0], world.wedding, "not-a-session")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500


async def test_removed_member_is_disconnected_on_another_process(
    world: World, gateways: list[str]
) -> None:
    vendor = await world.add("vendor")
    ws = await connect(gateways[1], world.wedding, await world.join(vendor))
    await recv(ws)
    await world.remove(vendor)  # through process 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await recv(ws, timeout=1.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code >= 4500


async def test_history_endpoint_pages_readable_events(world: World, gateways: list[str]) -> None:
    ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    try:
        await recv(ws)
        for i, ch in enumerate(["chat", "budget", "chat"]):
            await send(ws, type="message", id=f"h{i}", channel=ch, data={"i": i})
        acks = [await recv_type(ws, "ack") for _ in range(3)]
    finally:
        await ws.close()
    guest = await world.add("guest")
    async with httpx.AsyncClient(base_url=gateways[1]) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            params={"after_seq": 0},
            headers=world.auth(guest),
        )
        assert r.status_code == 200
        body = r.json()
        assert [e["seq"] for e in body["events"]] == [acks[0]["seq"], acks[2]["seq"]]
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            params={"after_seq": 0, "limit": 1},
            headers=world.auth(world.couple),
        )
        assert [e["seq"] for e in r.json()["events"]] == [acks[0]["seq"]]
        assert r.json()["next_after_seq"] == acks[0]["seq"]


async def _replay_messages(
    base: str, world: World, token: str, after: int, batch: bool
) -> list[str]:
    """Every WebSocket message of a resume from ``after``, up to the one with ``resumed``."""
    messages: list[str] = []
    params: dict[str, Any] = {"batch": 1} if batch else {}
    async with await connect(base, world.wedding, token, after, **params) as ws:
        while not messages or '"type":"resumed"' not in messages[-1]:
            messages.append(str(await asyncio.wait_for(ws.recv(), 10)))
    return messages


async def test_batch_1_packs_queued_frames_into_one_message_and_others_get_one_each(
    world: World, gateways: list[str]
) -> None:
    """``?batch=1``: what is queued for a socket goes out as one message of newline-separated
    frames, the same frames in the same order as without it; a client that did not ask
    always gets exactly one JSON frame per message."""
    sender = await connect(gateways[0], world.wedding, await world.join(world.couple))
    welcome = await recv_type(sender, "welcome")
    for i in range(300):
        await send(sender, type="message", id=f"b{i}", channel="chat", data={"i": i})
    acks = [(await recv_type(sender, "ack"))["seq"] for _ in range(300)]
    await sender.close()
    token = await world.join(world.couple)

    plain = await _replay_messages(gateways[1], world, token, welcome["last_seq"], False)
    assert all("\n" not in m for m in plain)
    plain_frames = [json.loads(m) for m in plain]

    batched = await _replay_messages(gateways[1], world, token, welcome["last_seq"], True)
    assert max(m.count("\n") for m in batched) > 0, "a 300-event replay queues frames"
    assert len(batched) < len(plain)
    batched_frames = [json.loads(line) for m in batched for line in m.split("\n")]

    def replayed(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [f for f in frames if f["type"] in ("event", "resumed")]  # not presence

    assert replayed(batched_frames) == replayed(plain_frames)  # same frames, same order
    assert [f["seq"] for f in batched_frames if f["type"] == "event"] == acks


async def test_rooms_opened_at_once_each_deliver_live_events(
    settings: Any, gateways: list[str]
) -> None:
    """A reconnect storm: sockets of many weddings and several sockets of one wedding all
    connect at the same moment (rooms open concurrently, no process-wide lock); each is
    welcomed into its room and gets the events sent there afterwards, once."""
    worlds = [World(settings, gateways[0]) for _ in range(8)]
    await asyncio.gather(*(w.create() for w in worlds))
    crowd = worlds[0]
    extra = await asyncio.gather(*(crowd.add("family") for _ in range(5)))
    seats = [(w, w.couple) for w in worlds] + [(crowd, u) for u in extra]
    tokens = await asyncio.gather(*(w.join(u) for w, u in seats))
    sockets = await asyncio.gather(
        *(connect(gateways[1], w.wedding, t) for (w, _), t in zip(seats, tokens, strict=True))
    )
    try:
        for ws in sockets:
            assert (await recv(ws))["type"] == "welcome"
        for i, (w, _) in enumerate(seats[: len(worlds)]):  # one message in each wedding
            await send(
                sockets[i], type="message", id=f"m{i}", channel="chat", data={"text": w.wedding}
            )
        for (w, _), ws in zip(seats, sockets, strict=True):
            got = await recv_type(ws, "event")
            assert got["event"]["data"] == {"text": w.wedding}  # its own room's, no other
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
