"""A document as JetStream and PostgreSQL hold it now: the newest snapshot and the tail of
updates after it (for the worker's compaction and a restore)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pycrdt import Doc

from runtime.documents import store
from streams.definitions import DOCUMENTS
from streams.documents import document_subject, update_decoder

_PAGE = 500
_IDLE = 5.0  # seconds without a message before a tail read gives up (purged meanwhile)


@dataclass
class Folded:
    doc: Doc[Any]
    seq: int  # the newest stream seq folded in (the snapshot's when the tail is empty)
    authors: Counter[str] = field(default_factory=Counter)  # updates per member, in the tail


async def head(js: JetStreamContext, wedding_id: uuid.UUID, document_id: uuid.UUID) -> int:
    """The stream seq of the document's newest update (0: none held)."""
    try:
        msg = await js.get_last_msg(DOCUMENTS.name, document_subject(wedding_id, document_id))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def fold(
    js: JetStreamContext, pool: asyncpg.Pool, row: store.DocumentRow, upto: int | None = None
) -> Folded:
    """The newest snapshot with every update after it up to ``upto`` (None: the head)."""
    async with pool.acquire() as conn:
        snap = await store.latest_snapshot(conn, row.id)
    doc: Doc[Any] = Doc()
    seq = 0
    if snap is not None:
        seq = snap[0]
        doc.apply_update(snap[1])
    out = Folded(doc, seq)
    last = await head(js, row.wedding_id, row.id) if upto is None else upto
    if last <= seq:
        return out
    queue: asyncio.Queue[Msg] = asyncio.Queue(_PAGE)
    sub = await js.subscribe(
        document_subject(row.wedding_id, row.id),
        stream=DOCUMENTS.name,
        ordered_consumer=True,
        cb=queue.put,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1
        ),
    )
    try:
        while out.seq < last:
            try:
                msg = await asyncio.wait_for(queue.get(), _IDLE)
            except TimeoutError:
                break
            mseq = msg.metadata.sequence.stream
            if mseq > last:
                break
            u = update_decoder.decode(msg.data)
            doc.apply_update(u.update)
            out.seq = mseq
            out.authors[u.user_id] += 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def current_state(js: JetStreamContext, pool: asyncpg.Pool, row: store.DocumentRow) -> bytes:
    """The whole document as stored now, as one update."""
    folded = await fold(js, pool, row)
    state: bytes = folded.doc.get_update()
    return state
