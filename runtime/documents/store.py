"""Live documents in PostgreSQL: the documents, their snapshots (versions) and who changed
them. All of the documents' SQL, for the HTTP routes, the socket and the worker."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
import msgspec

from runtime.db.types import Conn
from streams.documents import owner_of


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: uuid.UUID
    wedding_id: uuid.UUID
    name: str
    owner_id: str | None
    shared: bool
    created_by: str
    created_at: dt.datetime
    head_seq: int
    snapshot_seq: int

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> DocumentRow:
        return cls(
            r["id"],
            r["wedding_id"],
            r["name"],
            r["owner_id"],
            r["shared"],
            r["created_by"],
            r["created_at"],
            r["head_seq"],
            r["snapshot_seq"],
        )


_COLUMNS = "id, wedding_id, name, owner_id, shared, created_by, created_at, head_seq, snapshot_seq"


async def create(conn: Conn, wedding_id: uuid.UUID, name: str, by: str) -> DocumentRow | None:
    """A new document; None: the wedding has one of that name already."""
    row = await conn.fetchrow(
        f"""INSERT INTO documents (id, wedding_id, name, owner_id, created_by)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT (wedding_id, name) DO NOTHING
            RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        wedding_id,
        name,
        owner_of(name),
        by,
    )
    return None if row is None else DocumentRow.from_row(row)


async def by_name(conn: Conn, wedding_id: uuid.UUID, name: str) -> DocumentRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM documents WHERE wedding_id = $1 AND name = $2", wedding_id, name
    )
    return None if row is None else DocumentRow.from_row(row)


async def by_id(conn: Conn, document_id: uuid.UUID) -> DocumentRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM documents WHERE id = $1", document_id)
    return None if row is None else DocumentRow.from_row(row)


async def of_wedding(conn: Conn, wedding_id: uuid.UUID) -> list[DocumentRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM documents WHERE wedding_id = $1 ORDER BY name", wedding_id
    )
    return [DocumentRow.from_row(r) for r in rows]


async def set_shared(conn: Conn, document_id: uuid.UUID, shared: bool) -> None:
    await conn.execute("UPDATE documents SET shared = $2 WHERE id = $1", document_id, shared)


async def latest_snapshot(conn: Conn, document_id: uuid.UUID) -> tuple[int, bytes] | None:
    """(seq, state) of the newest snapshot, or None before the first compaction."""
    row = await conn.fetchrow(
        "SELECT seq, state FROM document_snapshots WHERE document_id = $1 "
        "ORDER BY seq DESC LIMIT 1",
        document_id,
    )
    return None if row is None else (int(row["seq"]), bytes(row["state"]))


async def snapshot_at(conn: Conn, document_id: uuid.UUID, seq: int) -> bytes | None:
    state: bytes | None = await conn.fetchval(
        "SELECT state FROM document_snapshots WHERE document_id = $1 AND seq = $2",
        document_id,
        seq,
    )
    return state


async def versions(
    conn: Conn, document_id: uuid.UUID
) -> list[tuple[int, dt.datetime, dict[str, int]]]:
    rows = await conn.fetch(
        """SELECT s.seq, s.created_at,
                  COALESCE(jsonb_object_agg(a.user_id, a.updates)
                           FILTER (WHERE a.user_id IS NOT NULL), '{}')::text AS authors
           FROM document_snapshots s
           LEFT JOIN document_authors a ON a.document_id = s.document_id AND a.seq = s.seq
           WHERE s.document_id = $1 GROUP BY s.seq, s.created_at ORDER BY s.seq""",
        document_id,
    )
    return [
        (int(r["seq"]), r["created_at"], msgspec.json.decode(r["authors"], type=dict[str, int]))
        for r in rows
    ]


# -- GDPR (app/documents/privacy.py) ---------------------------------------------------------


async def owned_by(conn: Conn, user_id: str) -> list[DocumentRow]:
    """The private documents of ``user_id``, in every wedding."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM documents WHERE owner_id = $1 ORDER BY wedding_id, name", user_id
    )
    return [DocumentRow.from_row(r) for r in rows]


async def authorship_of(conn: Conn, user_id: str) -> dict[uuid.UUID, tuple[uuid.UUID, str, int]]:
    """Per document ``user_id`` changed: (wedding, name, updates folded into versions)."""
    rows = await conn.fetch(
        """SELECT d.id, d.wedding_id, d.name, sum(a.updates)::bigint AS updates
           FROM document_authors a JOIN documents d ON d.id = a.document_id
           WHERE a.user_id = $1 GROUP BY d.id""",
        user_id,
    )
    return {r["id"]: (r["wedding_id"], r["name"], int(r["updates"])) for r in rows}


async def delete_documents(conn: Conn, ids: list[uuid.UUID]) -> int:
    """Deleted with every version and authorship row (ON DELETE CASCADE)."""
    status: str = await conn.execute("DELETE FROM documents WHERE id = ANY($1::uuid[])", ids)
    return int(status.rsplit(" ", 1)[1])


async def forget_author(conn: Conn, user_id: str) -> int:
    status: str = await conn.execute("DELETE FROM document_authors WHERE user_id = $1", user_id)
    return int(status.rsplit(" ", 1)[1])


# -- the documents worker -------------------------------------------------------------------


async def mark_head(conn: Conn, document_id: uuid.UUID, seq: int) -> bool:
    """The worker saw update ``seq`` of the document (idempotent); False: no such document
    (deleted with its wedding)."""
    status: str = await conn.execute(
        "UPDATE documents SET head_seq = GREATEST(head_seq, $2), updated_at = now() WHERE id = $1",
        document_id,
        seq,
    )
    return status != "UPDATE 0"


async def due(conn: Conn, quiet: float, max_behind: int, limit: int) -> list[DocumentRow]:
    """Documents with updates not in a snapshot yet, quiet for ``quiet`` seconds or
    ``max_behind`` updates behind; least recently updated first."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM documents
            WHERE head_seq > snapshot_seq
              AND (updated_at < now() - make_interval(secs => $1)
                   OR head_seq - snapshot_seq >= $2)
            ORDER BY updated_at LIMIT $3""",
        quiet,
        max_behind,
        limit,
    )
    return [DocumentRow.from_row(r) for r in rows]


async def save_snapshot(
    conn: Conn, document_id: uuid.UUID, seq: int, state: bytes, authors: dict[str, int]
) -> bool:
    """Store the version at ``seq`` unless one as new exists (a concurrent compactor);
    False: nothing written."""
    moved: str = await conn.execute(
        "UPDATE documents SET snapshot_seq = $2 WHERE id = $1 AND snapshot_seq < $2",
        document_id,
        seq,
    )
    if moved == "UPDATE 0":
        return False
    await conn.execute(
        "INSERT INTO document_snapshots (document_id, seq, state) VALUES ($1, $2, $3)",
        document_id,
        seq,
        state,
    )
    await conn.executemany(
        "INSERT INTO document_authors (document_id, seq, user_id, updates) VALUES ($1, $2, $3, $4)",
        [(document_id, seq, user, n) for user, n in authors.items()],
    )
    return True
