"""Room feeds (app/gateway/feeds.py): every room's ordered consumer, without timers.

Against the real JetStream events stream: events arrive once and in order, a consumer the
server lost is re-created from the event after the last one delivered, a closed feed
leaves no consumer behind, and a feed costs one task (its subscription's), not three.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo

from app.gateway.feeds import Feed, Feeds
from runtime.connections import Connections
from streams.definitions import EVENTS
from streams.subjects import wedding_subject, wedding_wildcard

pytestmark = pytest.mark.asyncio


class Seen:
    """What a feed delivered: (stream seq, payload) in order, and a wait for a count."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bytes]] = []
        self._grew = asyncio.Event()

    def __call__(self, msg: Msg, meta: Msg.Metadata) -> None:
        self.events.append((meta.sequence.stream, msg.data))
        self._grew.set()

    async def until(self, n: int, timeout: float = 20.0) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self._grew.clear()
                await self._grew.wait()
        return [data for _, data in self.events]


async def publish(conns: Connections, wedding: str, texts: list[str]) -> list[int]:
    seqs = []
    for text in texts:
        ack = await conns.js.publish(wedding_subject(wedding, "chat"), text.encode())
        seqs.append(ack.seq)
    return seqs


async def settled(feed: Feed) -> None:
    """The feed's re-creation, if one runs, is over (its events may arrive before it is)."""
    if feed.resetting is not None:
        await asyncio.wait_for(asyncio.shield(feed.resetting), 10)


async def consumers(conns: Connections) -> set[str]:
    return {c.name for c in await conns.js.consumers_info(EVENTS.name)}


async def test_new_events_arrive_once_in_order_and_a_closed_feed_leaves_no_consumer(
    conns: Connections,
) -> None:
    wedding = str(uuid.uuid4())
    await publish(conns, wedding, ["before"])  # not new: not delivered
    async with Feeds(conns.nc, conns.js, EVENTS.name) as feeds:
        seen = Seen()
        last = (await conns.js.stream_info(EVENTS.name)).state.last_seq
        feed = await feeds.open(wedding_wildcard(wedding), seen)
        assert feed.consumer in await consumers(conns)
        assert feed.sseq == last  # where a re-created consumer would start again
        texts = [f"m{i}" for i in range(50)]
        seqs = await publish(conns, wedding, texts)
        assert await seen.until(50) == [t.encode() for t in texts]
        assert [s for s, _ in seen.events] == seqs
        await feeds.close(feed)
        assert feed.consumer not in await consumers(conns)


async def test_a_consumer_the_server_lost_is_recreated_after_the_last_event_delivered(
    conns: Connections,
) -> None:
    wedding = str(uuid.uuid4())
    async with Feeds(conns.nc, conns.js, EVENTS.name, heartbeat=0.5) as feeds:
        seen = Seen()
        feed = await feeds.open(wedding_wildcard(wedding), seen)
        await publish(conns, wedding, ["a", "b"])
        await seen.until(2)
        lost = feed.consumer
        assert lost is not None
        await conns.js.delete_consumer(EVENTS.name, lost)  # as a restarted server loses it
        # stored while no consumer delivers: the silence re-creates it from "c" on
        await publish(conns, wedding, ["c", "d"])
        assert await seen.until(4) == [b"a", b"b", b"c", b"d"]
        await settled(feed)
        assert feeds.resets >= 1 and feed.consumer != lost
        await publish(conns, wedding, ["e"])
        assert await seen.until(5) == [b"a", b"b", b"c", b"d", b"e"]


async def test_a_restart_of_every_feed_skips_nothing_and_repeats_nothing(
    conns: Connections,
) -> None:
    wedding = str(uuid.uuid4())
    async with Feeds(conns.nc, conns.js, EVENTS.name) as feeds:
        seen = Seen()
        feed = await feeds.open(wedding_wildcard(wedding), seen)
        await publish(conns, wedding, ["a"])
        await seen.until(1)
        before = feed.consumer
        feeds.restart_all()  # as after a reconnect
        await publish(conns, wedding, ["b", "c"])
        assert await seen.until(3) == [b"a", b"b", b"c"]
        await settled(feed)
        assert feed.consumer != before and before not in await consumers(conns)


async def test_a_feed_costs_one_task_its_message_loop(conns: Connections) -> None:
    """No timer per room: nats-py's ordered consumer had three tasks per subscription, one
    of them waking every 250 ms (a fifth of a core at 5 000 idle rooms)."""
    async with Feeds(conns.nc, conns.js, EVENTS.name) as feeds:
        tasks_before = len(asyncio.all_tasks())
        opened = [await feeds.open(wedding_wildcard(str(uuid.uuid4())), Seen()) for _ in range(50)]
        assert len(asyncio.all_tasks()) - tasks_before == 50
        for feed in opened:
            await feeds.close(feed)


async def test_a_restart_before_the_room_knows_its_head_loses_nothing(
    conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS reconnects while the room is still opening (before its head lookup): the
    re-created consumer starts where the first one did, not at "new" (found by review)."""
    wedding = str(uuid.uuid4())
    real, calls, recreating = conns.js.add_consumer, 0, asyncio.Event()

    async def slow_second(stream: str, config: Any = None, **kw: Any) -> ConsumerInfo:
        nonlocal calls
        calls += 1
        if calls == 2:
            recreating.set()
            await asyncio.sleep(0.3)  # JetStream slow right after a reconnect
        return await real(stream, config, **kw)

    monkeypatch.setattr(conns.js, "add_consumer", slow_second)
    async with Feeds(conns.nc, conns.js, EVENTS.name) as feeds:
        seen = Seen()
        feed = await feeds.open(wedding_wildcard(wedding), seen)
        feeds.restart_all()
        await asyncio.wait_for(recreating.wait(), 10)  # its consumer's start is decided
        feed.covered(0)  # the head lookup: nothing stored for this wedding yet
        await publish(conns, wedding, ["during the re-creation"])
        await settled(feed)
        await publish(conns, wedding, ["after"])
        assert await seen.until(2) == [b"during the re-creation", b"after"]


async def test_an_open_whose_reply_was_lost_leaves_no_consumer(
    conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = conns.js.add_consumer

    async def lost_reply(stream: str, config: Any = None, **kw: Any) -> ConsumerInfo:
        await real(stream, config, **kw)  # created on the server
        raise TimeoutError  # but the reply never came

    before = await consumers(conns)
    async with Feeds(conns.nc, conns.js, EVENTS.name) as feeds:
        monkeypatch.setattr(conns.js, "add_consumer", lost_reply)
        with pytest.raises(TimeoutError):
            await feeds.open(wedding_wildcard(str(uuid.uuid4())), Seen())
        monkeypatch.undo()
        assert len(feeds) == 0
    assert await consumers(conns) - before == set()
