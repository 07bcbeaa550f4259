"""Reading a wedding's events back from JetStream, in order, for resume and history."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from streams.definitions import EVENTS
from streams.subjects import wedding_wildcard


async def events_between(
    js: JetStreamContext, wedding_id: uuid.UUID, after_seq: int, upto: int
) -> AsyncGenerator[tuple[int, str, bytes], None]:
    """(seq, channel, stored bytes) of the wedding's events with after_seq < seq <= upto."""
    if upto <= after_seq:
        return
    sub = await js.subscribe(
        wedding_wildcard(wedding_id),
        stream=EVENTS.name,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
        ),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except NatsTimeoutError:
                return  # nothing more is stored (upto was purged meanwhile)
            seq = msg.metadata.sequence.stream
            if seq > upto:
                return
            yield seq, msg.subject.rsplit(".", 1)[1], msg.data
            if seq == upto or msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def stream_epoch(js: JetStreamContext) -> str:
    """The events stream's creation time: a recreated stream restarts its seqs."""
    info = await js.stream_info(EVENTS.name)
    return info.created.isoformat() if info.created else "0"


async def fully_held(js: JetStreamContext, after_seq: int) -> bool:
    """Whether JetStream still holds everything after ``after_seq`` (nothing purged) and
    ``after_seq`` is a position this stream has reached."""
    state = (await js.stream_info(EVENTS.name)).state
    if after_seq > state.last_seq:
        return False  # from a longer, older life of the stream
    return after_seq + 1 >= state.first_seq or (state.messages == 0 and after_seq >= state.last_seq)
