"""The event log of a wedding: its events read back in order, for resume and history, from
JetStream and, for what it no longer holds, from the PostgreSQL archive (merged by seq); and
its position (the newest seq)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from runtime import direct
from runtime.db import archive
from streams.definitions import EVENTS, stream_epoch_of
from streams.permissions import Channel
from streams.subjects import wedding_subject, wedding_wildcard

log = logging.getLogger(__name__)

Stored = tuple[int, str, bytes]  # (seq, channel, the stored event bytes)
_PAGE = 500
DIRECT_PAGE = 100  # events a replay reads in one batch direct get before a consumer


async def first_held(js: JetStreamContext, wedding_id: uuid.UUID, from_seq: int) -> int | None:
    """The seq of the wedding's first event in JetStream at or after ``from_seq``."""
    try:
        msg = await js.get_msg(
            EVENTS.name, seq=from_seq, subject=wedding_wildcard(wedding_id), next=True
        )
    except NotFoundError:
        return None
    return int(msg.seq or 0) or None


async def _stored(
    js: JetStreamContext, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[Stored, None]:
    """A short replay — the common one, thousands of sockets resuming at once after a
    gateway restart — is one batch direct get (ADR-31: one request, no consumer); a longer
    one goes on through an ordered consumer, which delivers 2.5x faster per event
    (bench/resume.py: 10 000 events in 0.5 s vs 1.3 s in direct pages). A server without
    batch gets (nats-server < 2.11) is read through the consumer from the start."""
    more = True
    try:
        async for seq, channel, data, pending in _stored_direct(js, wedding_id, after_seq, upto):
            yield seq, channel, data
            after_seq, more = seq, pending > 0
    except direct.NoMessages:
        return  # nothing in range is held
    except direct.UNSUPPORTED as exc:
        log.debug("events of %s not read directly: %r", wedding_id, exc)
    if more and after_seq < upto:
        async with contextlib.aclosing(_stored_consumed(js, wedding_id, after_seq, upto)) as rest:
            async for item in rest:
                yield item


async def _stored_direct(
    js: JetStreamContext, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[tuple[int, str, bytes, int], None]:
    """Up to :data:`DIRECT_PAGE` events after ``after_seq``, each with how many of the
    wedding's events come after it (Nats-Num-Pending)."""
    page = await direct.batch(
        js, EVENTS.name, batch=DIRECT_PAGE, seq=after_seq + 1, subject=wedding_wildcard(wedding_id)
    )
    for msg in page:
        seq = msg.seq or 0
        if seq > upto:
            return
        pending = int((msg.headers or {}).get("Nats-Num-Pending", 0))
        yield seq, (msg.subject or "").rsplit(".", 1)[1], msg.data or b"", pending


async def _stored_consumed(
    js: JetStreamContext, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[Stored, None]:
    start = await first_held(js, wedding_id, after_seq + 1)
    if start is None or start > upto:
        return  # nothing in range is held: no consumer (and no wait for one)
    # an ordered push consumer delivering to a callback: nats-py's next_msg (and a pull
    # fetch, built on it) costs a timed wait per message, 2.3x slower (measured: 10 000
    # events in 0.85 s vs 0.37 s). The bounded queue passes the reader's pace back to the
    # consumer's flow control.
    queue: asyncio.Queue[Msg] = asyncio.Queue(_PAGE)
    sub = await js.subscribe(
        wedding_wildcard(wedding_id),
        stream=EVENTS.name,
        ordered_consumer=True,
        cb=queue.put,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
    )
    try:
        while True:
            if queue.empty():
                try:
                    msg = await asyncio.wait_for(queue.get(), 5)
                except TimeoutError:
                    return  # nothing more is stored (upto was purged meanwhile)
            else:
                msg = queue.get_nowait()
            md = msg.metadata
            seq = md.sequence.stream
            if seq > upto:
                return
            yield seq, msg.subject.rsplit(".", 1)[1], msg.data
            if seq == upto or md.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def _archived(
    pool: asyncpg.Pool, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[Stored, None]:
    while after_seq < upto:
        async with pool.acquire() as conn:
            page = await archive.between(conn, wedding_id, after_seq, upto, _PAGE)
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        after_seq = page[-1][0]


async def events_between(
    js: JetStreamContext, pool: asyncpg.Pool, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[Stored, None]:
    """The wedding's events with after_seq < seq <= upto, oldest first, each once: the
    archive's copy wins where both hold a seq (an erased event's redacted copy)."""
    if upto <= after_seq:
        return
    held = _stored(js, wedding_id, after_seq, upto)
    archived = _archived(pool, wedding_id, after_seq, upto)
    async with contextlib.aclosing(held), contextlib.aclosing(archived):
        a = await anext(archived, None)
        async for item in held:
            while a is not None and a[0] <= item[0]:
                yield a
                skip = a[0] == item[0]
                a = await anext(archived, None)
                if skip:
                    break
            else:
                yield item
        while a is not None:
            yield a
            a = await anext(archived, None)


async def stream_epoch(js: JetStreamContext) -> str:
    """The events stream's epoch: its creation time (UTC, ISO 8601 with ``Z``: URL-safe, it
    is pasted into ``?epoch=``), as stamped in its metadata at start so that a restored
    stream keeps it (streams/definitions.py); a recreated stream restarts its seqs and
    gets a new one."""
    return canonical_epoch(stream_epoch_of(await js.stream_info(EVENTS.name)))


def canonical_epoch(epoch: str) -> str:
    """One spelling of an epoch: the ``+00:00`` of earlier releases (and its unencoded
    form in a URL, where ``+`` reads as a space) is ``Z``."""
    epoch = epoch.strip().replace(" ", "+")
    return epoch[: -len("+00:00")] + "Z" if epoch.endswith("+00:00") else epoch


def same_epoch(given: str, current: str) -> bool:
    """Whether a client's epoch names the stream's current life, whichever form it has."""
    return canonical_epoch(given) == canonical_epoch(current)


async def fully_held(
    js: JetStreamContext, pool: asyncpg.Pool, wedding_id: uuid.UUID, after_seq: int
) -> bool:
    """Whether every event of the wedding after ``after_seq`` is still readable (in
    JetStream or the archive) and ``after_seq`` is a position this stream has reached."""
    state = (await js.stream_info(EVENTS.name)).state
    async with pool.acquire() as conn:
        marks = await archive.marks(conn, wedding_id)
        events_from = await conn.fetchval(
            "SELECT events_from FROM weddings WHERE id = $1", wedding_id
        )
    if after_seq > max(state.last_seq, marks.last_seq):
        return False  # from a longer, older life of the stream
    if after_seq + 1 >= state.first_seq or (state.messages == 0 and after_seq >= state.last_seq):
        return True
    # JetStream lost everything below first_seq; the archive holds the wedding's part of it
    # if the archive job purged (at least) that far, and there is no part of it if the
    # wedding began after first_seq (archiving other weddings moved first_seq on)
    return max(marks.purged_upto, events_from or 0) >= state.first_seq - 1


async def last_seq(js: JetStreamContext, pool: asyncpg.Pool, wedding_id: uuid.UUID) -> int:
    """The stream sequence of the wedding's newest event (0 if none): the last message of
    each of its channels in one batch direct get (or one request per channel on a server
    without batch gets), and the archive's mark."""

    async def held() -> int:
        try:
            last = await direct.last_for(js, EVENTS.name, [wedding_wildcard(wedding_id)])
            return max((msg.seq or 0 for msg in last), default=0)
        except direct.NoMessages:
            return 0
        except direct.UNSUPPORTED as exc:
            log.debug("last events of %s not read directly: %r", wedding_id, exc)
        return max(await asyncio.gather(*(one(c) for c in Channel)))

    async def one(channel: Channel) -> int:
        try:
            msg = await js.get_last_msg(EVENTS.name, wedding_subject(wedding_id, channel))
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def archived() -> int:
        async with pool.acquire() as conn:
            return (await archive.marks(conn, wedding_id)).last_seq

    return max(await asyncio.gather(archived(), held()))
