"""Reading every stored message of a stream (or of its subjects matching a filter)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class StoredMsg:
    seq: int
    subject: str
    data: bytes
    stored_at: dt.datetime
    headers: dict[str, str] | None = None


async def scan(js: JetStreamContext, stream: str, subject: str) -> AsyncGenerator[StoredMsg, None]:
    """Every message of ``stream`` on ``subject`` (wildcards allowed), oldest first."""
    try:
        first = await js.get_msg(stream, seq=1, subject=subject, next=True)
    except NotFoundError:
        return
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=int(first.seq or 1)
        ),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except NatsTimeoutError:
                return
            md = msg.metadata
            headers = msg.headers
            yield StoredMsg(md.sequence.stream, msg.subject, msg.data, md.timestamp, headers)
            if md.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()
