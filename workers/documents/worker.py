"""``wedsync worker documents``: compacts each live document's updates into snapshots in
PostgreSQL, so that a room opening loads one snapshot and a short tail (bounded replay).

Two parts. A JetStream consumer of WEDSYNC_DOCS records, per update, the newest stream seq
of its document (``documents.head_seq``; idempotent, acked after commit by the shared
runner). The compactor, every ``every`` seconds, takes the documents whose head is past
their snapshot and which are quiet (no update for ``quiet`` seconds) or far behind
(``max_behind`` updates), folds the tail into the newest snapshot
(runtime/documents/tail.py)
and stores the result as a new version with who changed it. It reads the updates from
JetStream, not from its consumer: a crash anywhere loses nothing (the next run folds the
same tail again), and a concurrent compactor's version is never overwritten by an older one.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from nats.js import JetStreamContext

from runtime.db.types import Conn
from runtime.documents import store
from runtime.documents.tail import fold
from streams.definitions import DOCUMENTS_CONSUMER
from workers.periodic import Periodic
from workers.runner import Delivery

log = logging.getLogger(__name__)

CONSUMER = DOCUMENTS_CONSUMER


class HeadHandler:
    async def __call__(self, d: Delivery, conn: Conn) -> None:
        try:  # wedsync.doc.<wedding>.<document>
            document_id = uuid.UUID(d.subject.rsplit(".", 1)[1])
        except ValueError:
            log.error("skipped update on unexpected subject %s", d.subject)
            return
        await store.mark_head(conn, document_id, d.stream_seq)


class Compactor(Periodic):
    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        *,
        every: float = 1.0,
        quiet: float = 1.0,
        max_behind: int = 200,
        per_tick: int = 50,
    ) -> None:
        self.js, self.pool = js, pool
        self.every, self.quiet, self.max_behind, self.per_tick = every, quiet, max_behind, per_tick
        self.name = "document compaction"
        self.compacted = 0

    async def tick(self) -> int:
        async with self.pool.acquire() as conn:
            due = await store.due(conn, self.quiet, self.max_behind, self.per_tick)
        done = 0
        for row in due:
            folded = await fold(self.js, self.pool, row, upto=row.head_seq)
            if folded.seq <= row.snapshot_seq:
                continue  # the tail is gone from the stream (purged): nothing to fold
            async with self.pool.acquire() as conn, conn.transaction():
                saved = await store.save_snapshot(
                    conn, row.id, folded.seq, folded.doc.get_update(), dict(folded.authors)
                )
            done += saved
        self.compacted += done
        return done
