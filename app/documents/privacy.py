"""Live documents in a person's GDPR export and erase (app/privacy calls these).

Export: the private documents they hold (their text as stored now) and, per document they
helped write, how many of its updates were theirs. Erase: their private documents go (the
rows, every version, and their updates in JetStream); their name leaves the authorship
of the shared documents (``document_authors``). What they typed into a shared document
stays: it is the wedding's text, written with the others, and carries no name (Yjs
identifies a writer by a random client number).
"""

from __future__ import annotations

from typing import Any

from pycrdt import Text

from runtime.connections import Connections
from runtime.documents import store
from runtime.documents.tail import fold
from streams.definitions import DOCUMENTS
from streams.documents import TEXT, access_subject, document_subject, kind_of


async def export(conns: Connections, user_id: str) -> list[dict[str, Any]]:
    async with conns.pool.acquire() as conn:
        owned = await store.owned_by(conn, user_id)
        authored = await store.authorship_of(conn, user_id)
    out: list[dict[str, Any]] = []
    for row in owned:
        folded = await fold(conns.js, conns.pool, row)
        out.append(
            {
                "wedding_id": row.wedding_id,
                "name": row.name,
                "kind": kind_of(row.name),
                "shared": row.shared,
                "created_at": row.created_at,
                "seq": folded.seq,
                "text": str(folded.doc.get(TEXT, type=Text)),
                "updates": authored.pop(row.id, (row.wedding_id, row.name, 0))[2],
            }
        )
    for _, (wedding_id, name, updates) in sorted(authored.items(), key=lambda kv: kv[1][:2]):
        out.append(
            {"wedding_id": wedding_id, "name": name, "kind": kind_of(name), "updates": updates}
        )
    return out


async def erase(conns: Connections, user_id: str) -> tuple[int, int]:
    """(private documents deleted, authorship rows removed); their stored updates purged."""
    async with conns.pool.acquire() as conn, conn.transaction():
        owned = await store.owned_by(conn, user_id)
        deleted = await store.delete_documents(conn, [r.id for r in owned])
        authors = await store.forget_author(conn, user_id)
    for row in owned:
        await conns.js.purge_stream(
            DOCUMENTS.name, subject=document_subject(row.wedding_id, row.id)
        )
        # sockets still open on it close (the rooms re-read the row: gone)
        await conns.nc.publish(access_subject(row.wedding_id, row.id), b"")
    return deleted, authors
