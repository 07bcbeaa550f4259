"""Batch direct gets (ADR-31, through ``jetstreamext``): many messages of a stream in one
request, answered by any replica, no consumer created. Read whole, within :data:`TIMEOUT`
(jetstreamext itself waits 30 s; nats-py's requests 5 s): with NATS gone a caller fails as
fast as with a plain request. A server without batch gets (nats-server < 2.11) raises one
of :data:`UNSUPPORTED`: the caller reads another way."""

from __future__ import annotations

import asyncio
from typing import Any

import jetstreamext
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

TIMEOUT = 5.0
NoMessages = jetstreamext.NoMessagesError  # nothing matched
UNSUPPORTED = (jetstreamext.BatchUnsupportedError, jetstreamext.InvalidResponseError)


async def batch(js: JetStreamContext, stream: str, **options: Any) -> list[RawStreamMsg]:
    """``jetstreamext.get_batch``: messages from ``seq`` on (``subject`` filters)."""
    async with asyncio.timeout(TIMEOUT):
        return [msg async for msg in jetstreamext.get_batch(js, stream, **options)]


async def last_for(
    js: JetStreamContext, stream: str, subjects: list[str], **options: Any
) -> list[RawStreamMsg]:
    """``jetstreamext.get_last_msgs_for``: the last message of each matching subject."""
    async with asyncio.timeout(TIMEOUT):
        return [
            msg async for msg in jetstreamext.get_last_msgs_for(js, stream, subjects, **options)
        ]
