"""Reading a wedding's position: its newest event in JetStream or, once JetStream holds
none of it, in the archive."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from app.db import archive
from streams.definitions import EVENTS
from streams.permissions import Channel
from streams.subjects import wedding_subject


async def last_seq(js: JetStreamContext, pool: asyncpg.Pool, wedding_id: uuid.UUID) -> int:
    """The stream sequence of the wedding's newest event (0 if none)."""

    async def one(channel: Channel) -> int:
        try:
            msg = await js.get_last_msg(EVENTS.name, wedding_subject(wedding_id, channel))
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def archived() -> int:
        async with pool.acquire() as conn:
            return (await archive.marks(conn, wedding_id)).last_seq

    return max(await asyncio.gather(archived(), *(one(c) for c in Channel)))
