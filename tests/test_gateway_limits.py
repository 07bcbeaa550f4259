"""Gateway limits on real processes: slow consumers, sockets per user, resume edge cases,
and several API processes sharing one port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import EVENTS
from tests.kits.world import (
    World,
    connect,
    gateway_processes,
    recv,
    recv_type,
    send,
    subprotocols,
    ws_url,
)

pytestmark = pytest.mark.asyncio

MAX_PER_USER = 2
SLOW_ENV = {"WEDSYNC_WS_QUEUE": "32"}
EVENT_PAD = 50_000  # bytes of data per message: under WEDSYNC_WS_MAX_FRAME (65536)
WINDOW = 8  # messages in flight from the sending socket: well under its queue of 32


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return {"WEDSYNC_WS_MAX_PER_USER": str(MAX_PER_USER)}


# -- helpers -----------------------------------------------------------------------------


def port_of(base: str) -> int:
    port = urlsplit(base).port
    assert port is not None
    return port


def workers_of(top: psutil.Process, port: int) -> list[psutil.Process]:
    """The children of ``top`` holding the listening socket of ``port``."""
    found = []
    for p in top.children():
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in p.net_connections("tcp")
            ):
                found.append(p)
    return found


def serving(processes: list[psutil.Process], ws: ClientConnection) -> psutil.Process:
    """Which of ``processes`` holds the server end of ``ws``."""
    mine = ws.local_address[1]
    (owner,) = [
        p
        for p in processes
        if any(c.raddr and c.raddr.port == mine for c in p.net_connections("tcp"))
    ]
    return owner


async def connect_not_reading(url: str, token: str) -> ClientConnection:
    """A client with a small TCP receive window that buffers one frame at most: once it
    stops calling recv(), the server's writes back up after a few megabytes."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    offered = subprotocols(token)
    return await websockets.connect(
        url, sock=sock, max_size=2**24, max_queue=1, subprotocols=offered
    )


async def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server ends the socket: the code it sent (None: no close frame)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await recv(ws, timeout)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def until_resumed(
    ws: ClientConnection, timeout: float = 10
) -> tuple[list[int], dict[str, Any]]:
    """The seqs of the events replayed before ``resumed``, and the ``resumed`` frame."""
    seqs = []
    while True:
        f = await recv(ws, timeout)
        assert f["type"] != "error", f
        if f["type"] == "event":
            seqs.append(f["seq"])
        elif f["type"] == "resumed":
            return seqs, f


async def exchange(ws: ClientConnection, ids: list[str], pad: str = "") -> list[tuple[str, int]]:
    """Send one chat message per id from ``ws`` and read until ``ws`` has the ack and its own
    event of each (seq == ack seq). The events as (id, seq), in the order they came."""
    for mid in ids:
        data = {"id": mid, "pad": pad} if pad else {"id": mid}
        await send(ws, type="message", id=mid, channel="chat", data=data)
    acks: dict[str, int] = {}
    events: list[tuple[str, int]] = []
    while len(acks) < len(ids) or len(events) < len(ids):
        f = await recv(ws, timeout=5)
        assert f["type"] != "error", f
        if f["type"] == "ack":
            acks[f["id"]] = f["seq"]
        elif f["type"] == "event":
            events.append((f["event"]["data"]["id"], f["seq"]))
    assert acks == dict(events)
    return events


async def chat(ws: ClientConnection, *ids: str) -> list[int]:
    """Send one chat message per id; their seqs, in id order."""
    seqs = dict(await exchange(ws, list(ids)))
    return [seqs[mid] for mid in ids]


async def push(
    ws: ClientConnection, first: int, count: int, after_batch: Callable[[], None]
) -> list[int]:
    """Send ``count`` big chat messages from ``ws``, WINDOW at a time; each batch must come
    back (acks and events) within 2 s, the events in seq order. Returns the event seqs."""
    seqs: list[int] = []
    pad = "x" * EVENT_PAD
    for start in range(first, first + count, WINDOW):
        sent_at = time.monotonic()
        ids = [f"big{i}" for i in range(start, min(start + WINDOW, first + count))]
        seqs += [seq for _, seq in await exchange(ws, ids, pad)]
        assert time.monotonic() - sent_at < 2.0, "the room stalled"
        after_batch()
    assert seqs == sorted(set(seqs)), "events out of order or repeated"
    return seqs


# -- 1. slow consumers -------------------------------------------------------------------


async def test_slow_consumer_is_dropped_while_the_room_keeps_flowing(settings: Settings) -> None:
    async with gateway_processes(settings, 1, SLOW_ENV) as [(base, proc)]:
        gateway = psutil.Process(proc.pid)  # one process: it serves the sockets itself
        w = World(settings, base)
        await w.create()
        family = await w.add("family")
        fast = await connect(base, w.wedding, await w.join(w.couple))
        slow = await connect_not_reading(ws_url(base, w.wedding), await w.join(family))
        try:
            await recv_type(fast, "welcome")
            await recv_type(slow, "welcome")  # and from here on it does not read
            rss: list[int] = []

            def sample() -> None:
                rss.append(gateway.memory_info().rss)

            seqs = await push(fast, 0, 40, sample)  # warm up: 2 MB
            baseline = rss[-1]
            rss.clear()
            count = 800
            seqs += await push(fast, 40, count, sample)  # 40 MB more through the room
            growth = max(rss) - baseline
            assert growth < count * EVENT_PAD / 4, f"gateway RSS grew {growth / 1e6:.1f} MB"

            # The slow socket reads again: it gets an in-order prefix of the room's events,
            # far from all of them, then the end of the connection (4001 if the close frame
            # made it past the backed-up data).
            got: list[int] = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    f = await recv(slow, timeout=10)
                    if f["type"] == "event":
                        got.append(f["seq"])
            assert got == seqs[: len(got)]
            assert len(got) < len(seqs) // 2
            if closed.value.rcvd is not None:
                assert closed.value.rcvd.code == 4001
            # the fast socket is still open and served
            await send(fast, type="ping")
            await recv_type(fast, "pong")
        finally:
            await fast.close()
            await slow.close()


async def test_sigterm_stops_the_api_even_with_a_client_that_stopped_reading(
    settings: Settings,
) -> None:
    """A peer that stopped reading never lets its socket flush: shutdown must not wait for it
    longer than WEDSYNC_SHUTDOWN_TIMEOUT."""
    env = {**SLOW_ENV, "WEDSYNC_SHUTDOWN_TIMEOUT": "1"}
    async with gateway_processes(settings, 1, env) as [(base, proc)]:
        w = World(settings, base)
        await w.create()
        family = await w.add("family")
        fast = await connect(base, w.wedding, await w.join(w.couple))
        slow = await connect_not_reading(ws_url(base, w.wedding), await w.join(family))
        try:
            await recv_type(fast, "welcome")
            await recv_type(slow, "welcome")
            await push(fast, 0, 200, lambda: None)  # 10 MB: the slow socket is backed up
            await fast.close()
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 4)
            except TimeoutError:
                pytest.fail("`wedsync api` still running 4 s after SIGTERM")
        finally:
            assert slow.transport is not None
            slow.transport.abort()  # lets a stuck gateway finish its shutdown


# -- 2. sockets per user -----------------------------------------------------------------


async def connect_when_free(base: str, wedding: str, token: str) -> ClientConnection:
    """Connect, retrying while the server answers 4029 (it may not have seen a close yet)."""
    deadline = time.monotonic() + 5
    while True:
        ws = await connect(base, wedding, token)
        try:
            await recv_type(ws, "welcome")
            return ws
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4029
            assert time.monotonic() < deadline, "still refused 5 s after a socket closed"


async def test_a_users_sockets_per_wedding_and_process_are_capped(
    world: World, gateways: list[str], settings: Settings
) -> None:
    vendor = await world.add("vendor")
    token, other_session = await world.join(vendor), await world.join(vendor)
    base = gateways[0]
    open_: list[ClientConnection] = []
    try:
        for t in (token, other_session):
            open_.append(await connect(base, world.wedding, t))
            await recv_type(open_[-1], "welcome")
        # the third socket is refused with the reconnect-later code, whatever the session
        for t in (token, other_session):
            assert await close_code(await connect(base, world.wedding, t)) == 4029

        # others are not limited: another member, the same user on another process, the
        # same user on another wedding
        couple = await connect(base, world.wedding, await world.join(world.couple))
        open_.append(couple)
        await recv_type(couple, "welcome")
        elsewhere = await connect(gateways[1], world.wedding, token)
        open_.append(elsewhere)
        await recv_type(elsewhere, "welcome")
        second = World(settings, base)
        await second.create()
        async with httpx.AsyncClient(base_url=base) as c:
            r = await c.put(
                f"/api/weddings/{second.wedding}/members/{vendor}",
                headers=second.auth(second.couple),
                json={"role": "vendor"},
            )
            assert r.status_code == 200, r.text
        other_wedding = await connect(base, second.wedding, await second.join(vendor))
        open_.append(other_wedding)
        await recv_type(other_wedding, "welcome")

        # the refusals cost the user nothing: both sockets still get the room's events
        (seq,) = await chat(couple, "hello")
        for ws in open_[:2]:
            assert (await recv_type(ws, "event"))["seq"] == seq

        # closing one frees exactly one place
        await open_.pop(0).close()
        open_.insert(0, await connect_when_free(base, world.wedding, token))
        assert await close_code(await connect(base, world.wedding, token)) == 4029
    finally:
        for ws in open_:
            await ws.close()


# -- 3. resume edge cases ----------------------------------------------------------------


async def test_resume_echoes_the_welcome_epoch_and_replays_what_was_missed(
    world: World, gateways: list[str]
) -> None:
    family = await world.add("family")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b: ClientConnection | None = None
    try:
        welcome = await recv_type(a, "welcome")
        epoch, start = welcome["epoch"], welcome["last_seq"]
        assert epoch
        seqs = await chat(a, "e1", "e2", "e3")
        token = await world.join(family)
        b = await connect(gateways[1], world.wedding, token, start, epoch=epoch)
        assert (await recv_type(b, "welcome"))["epoch"] == epoch  # the same on every process
        replayed, resumed = await until_resumed(b)
        assert replayed == seqs
        expected = {"after_seq": start, "last_seq": seqs[-1], "recovered": True, "epoch": epoch}
        assert {k: resumed[k] for k in expected} == expected
        # the resume frame on an open socket, with and without the epoch
        await send(b, type="resume", after_seq=seqs[0], epoch=epoch)
        replayed, resumed = await until_resumed(b)
        assert replayed == seqs[1:]
        assert resumed["recovered"] is True and resumed["epoch"] == epoch
        await send(b, type="resume", after_seq=seqs[1])
        replayed, resumed = await until_resumed(b)
        assert replayed == seqs[2:]
        assert resumed["recovered"] is True and resumed["epoch"] == epoch
    finally:
        await a.close()
        if b is not None:
            await b.close()


@pytest.mark.parametrize("how", ["query", "frame"])
async def test_resume_from_another_epoch_replays_nothing(
    world: World, gateways: list[str], how: str
) -> None:
    family = await world.add("family")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b: ClientConnection | None = None
    try:
        welcome = await recv_type(a, "welcome")
        epoch, start = welcome["epoch"], welcome["last_seq"]
        seqs = await chat(a, "o1", "o2")
        token = await world.join(family)
        if how == "query":
            b = await connect(gateways[1], world.wedding, token, start, epoch="x" + epoch)
            await recv_type(b, "welcome")
        else:
            b = await connect(gateways[1], world.wedding, token)
            await recv_type(b, "welcome")
            await send(b, type="resume", after_seq=start, epoch="x" + epoch)
        replayed, resumed = await until_resumed(b)
        assert replayed == []
        assert resumed["recovered"] is False
        assert resumed["epoch"] == epoch and resumed["last_seq"] == seqs[-1]
        # live from the head on: the next event is the next one sent, nothing older
        (live,) = await chat(a, "o3")
        assert (await recv_type(b, "event"))["seq"] == live
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_resume_beyond_the_weddings_head_is_not_recovered(
    world: World, gateways: list[str]
) -> None:
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b: ClientConnection | None = None
    try:
        await recv_type(a, "welcome")
        (head,) = await chat(a, "h1")
        b = await connect(
            gateways[1], world.wedding, await world.join(world.couple), after=head + 1000
        )
        assert (await recv_type(b, "welcome"))["last_seq"] == head
        replayed, resumed = await until_resumed(b)
        assert replayed == []
        assert resumed["recovered"] is False and resumed["last_seq"] == head
        (live,) = await chat(a, "h2")
        assert (await recv_type(b, "event"))["seq"] == live
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_resume_from_a_purged_position_is_not_recovered(
    world: World, gateways: list[str], conns: Connections
) -> None:
    family = await world.add("family")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b: ClientConnection | None = None
    try:
        start = (await recv_type(a, "welcome"))["last_seq"]
        s1, _s2, s3 = await chat(a, "p1", "p2", "p3")
        assert await conns.js.purge_stream(EVENTS.name, seq=s3)  # removes every seq < s3
        assert (await conns.js.stream_info(EVENTS.name)).state.first_seq == s3

        b = await connect(gateways[1], world.wedding, await world.join(family), after=start)
        await recv_type(b, "welcome")
        replayed, resumed = await until_resumed(b)
        assert set(replayed) <= {s3}  # what is still held, nothing purged
        assert resumed["recovered"] is False and resumed["last_seq"] == s3
        # from just before the first held seq nothing is missing
        await send(b, type="resume", after_seq=s3 - 1)
        replayed, resumed = await until_resumed(b)
        assert replayed == [s3]
        assert resumed["recovered"] is True
        # from before a purged seq something may be missing, also with the resume frame
        await send(b, type="resume", after_seq=s1)
        replayed, resumed = await until_resumed(b)
        assert set(replayed) <= {s3}  # s2 is gone for good
        assert resumed["recovered"] is False
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_resume_after_the_weddings_newest_event_was_purged_is_prompt(
    world: World, gateways: list[str], conns: Connections
) -> None:
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b: ClientConnection | None = None
    try:
        start = (await recv_type(a, "welcome"))["last_seq"]
        (s1,) = await chat(a, "gone")
        assert await conns.js.purge_stream(EVENTS.name, seq=s1 + 1)  # the wedding's events too
        # a socket on the process where the room is open (``a`` keeps it open)
        b = await connect(gateways[0], world.wedding, await world.join(world.couple), after=start)
        await recv_type(b, "welcome")
        replayed, resumed = await until_resumed(b, timeout=2)
        assert replayed == [] and resumed["recovered"] is False
    finally:
        await a.close()
        if b is not None:
            await b.close()


# -- 4. several API processes on one port ------------------------------------------------


async def test_api_processes_share_one_port_and_all_stop(settings: Settings) -> None:
    sockets: list[ClientConnection] = []
    async with contextlib.AsyncExitStack() as stack:
        [(base, proc)] = await stack.enter_async_context(
            gateway_processes(settings, 1, {"WEDSYNC_API_PROCESSES": "2"})
        )
        top = psutil.Process(proc.pid)
        deadline = time.monotonic() + 10
        while len(workers := workers_of(top, port_of(base))) < 2:
            assert time.monotonic() < deadline, f"workers: {workers}"
            await asyncio.sleep(0.05)
        assert len(workers) == 2
        everything = [top, *top.children(recursive=True)]

        w = World(settings, base)
        await w.create()
        vendor = await w.add("vendor")
        b = await connect(base, w.wedding, await w.join(vendor))
        sockets.append(b)
        await recv_type(b, "welcome")
        on = serving(workers, b)
        # connect the couple until it lands on the other worker (the kernel picks one)
        token = await w.join(w.couple)
        while True:
            assert time.monotonic() < deadline + 10, "every connection went to one worker"
            a = await connect(base, w.wedding, token)
            await recv_type(a, "welcome")
            if serving(workers, a) != on:
                sockets.append(a)
                break
            await a.close()

        (seq,) = await chat(a, "across")  # acked, and back to the sender as its event
        got = await recv_type(b, "event")
        assert got["seq"] == seq and got["event"]["data"] == {"id": "across"}

        async with asyncio.timeout(15):
            await stack.aclose()  # SIGTERM to `wedsync api`, and wait for it
    try:
        for ws in sockets:  # open sockets were closed with a reconnect-allowed code
            assert await close_code(ws, timeout=5) in (1001, 1012, 4000)
        _, alive = await asyncio.to_thread(psutil.wait_procs, everything, 5)
        assert not alive
    finally:
        for ws in sockets:
            await ws.close()
