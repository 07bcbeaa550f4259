"""Reading a wedding's position in JetStream."""

from __future__ import annotations

import asyncio
import uuid

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from streams.definitions import EVENTS
from streams.permissions import Channel
from streams.subjects import wedding_subject


async def last_seq(js: JetStreamContext, wedding_id: uuid.UUID) -> int:
    """The stream sequence of the wedding's newest event (0 if none)."""

    async def one(channel: Channel) -> int:
        try:
            msg = await js.get_last_msg(EVENTS.name, wedding_subject(wedding_id, channel))
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    return max(await asyncio.gather(*(one(c) for c in Channel)))
