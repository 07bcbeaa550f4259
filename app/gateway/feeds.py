"""Every room's live event feed of one process: ordered consumers without a timer each.

A room needs the new events of its wedding once, in order, none skipped: an *ordered*
JetStream consumer (flow control, idle heartbeats, no acks, re-created from the last
delivered stream sequence when anything goes missing). nats-py's ordered consumer does
that per subscription with three tasks each — its message loop, an activity check, and a
flow-control check that wakes every 250 ms — so a gateway holding 5 000 rooms woke 20 000
times a second doing nothing (a fifth of a core idle; docs/benchmarks.md). Here each room
is one consumer delivering to its own inbox (one core subscription: its message loop is
the only task a room has), and the bookkeeping is per message, not per timer:

* a data message whose consumer sequence is not the next one (a message lost to a slow
  subscription, a consumer the server lost) re-creates the room's consumer from the stream
  sequence after the last one delivered; its deliveries until then are ignored by token;
* a flow-control request is answered at once (everything before it was handled: one
  subscription delivers in order), a heartbeat naming a later consumer sequence than the
  one handled re-creates the consumer, one naming a stall answers it;
* one process-wide check every two heartbeats re-creates the consumer of any room that
  heard nothing (no event and no heartbeat) since the last check;
* a consumer is deleted when its room closes or is replaced; one whose delete failed
  (NATS away), or whose process went, has no subscription left on its inbox, and the
  server removes it after its inactivity threshold.

(One wildcard subscription for every room's inbox was tried first: nats-server 2.15 did
not deliver to a push consumer whose only interest was a wildcard subscription.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Self

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header

from runtime import tasks

log = logging.getLogger(__name__)

#: seconds between the server's idle heartbeats on a consumer with nothing to deliver
HEARTBEAT = 5.0
#: consumers re-created at the same time (after a reconnect every room's is: in turn)
RECREATE_AT_ONCE = 16

OnEvent = Callable[[Msg, Msg.Metadata], None]


@dataclass(eq=False, slots=True)
class Feed:
    """One room's consumer: ``on_event(msg, metadata)`` for each new event, in order."""

    filter_subject: str
    on_event: OnEvent
    # the last stream sequence delivered or otherwise covered: a re-created consumer starts
    # after it (None only until the first consumer's create answers where it started)
    sseq: int | None = None
    dseq: int = 0  # the last consumer sequence handled (of the current consumer)
    inbox: str = ""  # the current consumer's deliver subject
    sub: Subscription | None = None
    consumer: str | None = None
    heard: bool = True  # anything (event or heartbeat) since the last activity check
    closed: bool = False
    resetting: asyncio.Task[None] | None = field(default=None, repr=False)
    # a re-creation asked for before the first consumer said where it starts (see _reset)
    deferred: str | None = None

    def covered(self, seq: int) -> None:
        """Events up to ``seq`` are accounted for (a head looked up after subscribing): a
        re-created consumer starts after it."""
        self.sseq = max(self.sseq or 0, seq)


class Feeds:
    """``async with Feeds(nc, js, stream) as feeds``: ``await feeds.open(subject, cb)``,
    ``await feeds.close(feed)``, ``feeds.restart_all()`` after a reconnect."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, stream: str, heartbeat: float = HEARTBEAT
    ) -> None:
        self.nc, self.js, self.stream, self.heartbeat = nc, js, stream, heartbeat
        self._feeds: set[Feed] = set()
        self._watch: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(RECREATE_AT_ONCE)
        self.resets = 0  # consumers re-created (lost, gapped or silent)

    def __len__(self) -> int:
        return len(self._feeds)

    async def __aenter__(self) -> Self:
        self._watch = asyncio.create_task(self._watch_activity(), name="feed activity")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watch is not None:
            await tasks.stop(self._watch)
        for feed in list(self._feeds):
            await self.close(feed)

    async def open(self, filter_subject: str, on_event: OnEvent) -> Feed:
        """A feed of the events stored from now on under ``filter_subject``."""
        feed = Feed(filter_subject, on_event)
        try:
            await self._create(feed)
        except BaseException:  # nothing of it may live on (a re-creation it asked for)
            await self.close(feed)
            raise
        self._feeds.add(feed)
        return feed

    async def close(self, feed: Feed) -> None:
        feed.closed = True
        self._feeds.discard(feed)
        if feed.resetting is not None:
            await tasks.stop(feed.resetting)
        await self._retire(feed.sub, feed.consumer)
        feed.sub = feed.consumer = None

    def restart_all(self) -> None:
        """Re-create every consumer from where it was (after NATS came back: the server
        may have lost them, and would say so only by falling silent)."""
        for feed in list(self._feeds):
            self._reset(feed, "reconnected")

    async def _create(self, feed: Feed) -> None:
        inbox = self.nc.new_inbox()
        name = inbox.rsplit(".", 1)[1]  # ours: deleted by name even if no reply came
        config = ConsumerConfig(
            name=name,
            deliver_subject=inbox,
            filter_subject=feed.filter_subject,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self.heartbeat,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=max(30.0, 6 * self.heartbeat),
        )
        if feed.sseq is None:
            config.deliver_policy = DeliverPolicy.NEW
        else:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = feed.sseq + 1
        # subscribed first: deliveries may arrive before the create's reply
        sub = await self.nc.subscribe(inbox, cb=partial(self._on_msg, feed, inbox))
        feed.inbox, feed.sub, feed.consumer, feed.dseq, feed.heard = inbox, sub, None, 0, True
        try:
            info = await self.js.add_consumer(self.stream, config)
        except BaseException:  # (not deleted if cancelled: it has no subscription left,
            if feed.inbox == inbox:  # and the server removes it after its threshold)
                feed.inbox, feed.sub = "", None
            await self._retire(sub, name)
            raise
        if feed.inbox != inbox or feed.closed:  # replaced (a gap meanwhile) or closed
            await self._retire(sub, info.name)
            return
        feed.consumer = info.name
        if feed.sseq is None:  # a new consumer starts after the stream's last message
            feed.sseq = info.delivered.stream_seq if info.delivered is not None else 0
        if feed.deferred is not None:
            why, feed.deferred = feed.deferred, None
            self._reset(feed, why)

    def _reset(self, feed: Feed, why: str) -> None:
        """Replace the feed's consumer (once at a time); its deliveries are ignored now."""
        if feed.closed or feed.resetting is not None:
            return
        if feed.sseq is None:  # where to start again is known once the create answers
            feed.deferred = why
            return
        self.resets += 1
        log.info("re-creating the feed of %s after %s (%s)", feed.filter_subject, feed.sseq, why)
        old_sub, old, feed.inbox = feed.sub, feed.consumer, ""
        feed.resetting = asyncio.create_task(self._recreate(feed, old_sub, old))

    async def _recreate(self, feed: Feed, old_sub: Subscription | None, old: str | None) -> None:
        delay = 0.25
        try:
            await self._retire(old_sub, old)
            while not feed.closed:
                try:
                    async with self._slots:
                        await self._create(feed)
                    break
                except Exception as exc:  # JetStream not back yet: again, backing off
                    log.info("feed of %s not re-created yet: %r", feed.filter_subject, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            feed.resetting = None

    async def _retire(self, sub: Subscription | None, consumer: str | None) -> None:
        """Stop listening on a consumer's inbox and delete it (if that fails, the server
        removes it once it has had no interest for its inactivity threshold)."""
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, consumer)

    async def _on_msg(self, feed: Feed, inbox: str, msg: Msg) -> None:
        if inbox != feed.inbox:
            return  # a consumer replaced or closed
        feed.heard = True
        headers = msg.headers
        if headers is not None and headers.get(Header.STATUS.value) == "100":
            await self._control(feed, msg, headers)
            return
        if not msg.reply:
            return
        meta = msg.metadata
        if meta.sequence.consumer != feed.dseq + 1:
            self._reset(feed, f"consumer sequence {meta.sequence.consumer}, not {feed.dseq + 1}")
            return
        feed.dseq, feed.sseq = meta.sequence.consumer, meta.sequence.stream
        feed.on_event(msg, meta)

    async def _control(self, feed: Feed, msg: Msg, headers: dict[str, str]) -> None:
        if msg.reply:  # flow control: every message before it has been handled
            await self.nc.publish(msg.reply)
            return
        stalled = headers.get(Header.CONSUMER_STALLED.value)
        if stalled:
            await self.nc.publish(stalled)
        last = headers.get(Header.LAST_CONSUMER.value)
        if last is not None and last.isdigit() and int(last) > feed.dseq:
            self._reset(feed, f"a heartbeat at consumer sequence {last}, {feed.dseq} handled")

    async def _watch_activity(self) -> None:
        """Consumers silent for two heartbeats (no event, no heartbeat) are re-created."""
        while True:
            await asyncio.sleep(2 * self.heartbeat)
            for feed in list(self._feeds):
                if not feed.heard and feed.resetting is None:
                    self._reset(feed, "silence")
                feed.heard = False
