"""``/api/weddings/{id}/documents``: list, create and share live documents; their versions
(the snapshots the documents worker folded) and restoring one (docs/documents.md)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar import Controller, Request, get, patch, post
from pycrdt import Doc, Text

from app.auth import Identity, client_ip
from app.documents.rooms import DocumentHub
from app.documents.schemas import (
    Document,
    DocumentCreate,
    DocumentList,
    DocumentPatch,
    Version,
    VersionList,
    VersionText,
)
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.weddings import store as wedding_store
from app.weddings.access import require_member
from runtime.connections import Connections
from runtime.db import audit
from runtime.documents import store
from runtime.documents.tail import current_state
from streams.definitions import DOCUMENTS
from streams.documents import (
    TEXT,
    DocumentUpdate,
    Kind,
    document_access,
    document_subject,
    kind_of,
    may_create,
    update_encoder,
    valid_name,
)


def _document(row: store.DocumentRow, m: wedding_store.Membership, user_id: str) -> Document:
    access = document_access(m.role, m.status, user_id, row.name, row.shared)
    return Document(
        id=row.id,
        name=row.name,
        kind=kind_of(row.name),
        owner_id=row.owner_id,
        shared=row.shared,
        created_by=row.created_by,
        created_at=row.created_at,
        snapshot_seq=row.snapshot_seq,
        can_write=access.write,
        socket_path=f"/ws/weddings/{row.wedding_id}/documents/{row.name}",
    )


def _readable(row: store.DocumentRow | None, m: wedding_store.Membership, user_id: str) -> bool:
    return row is not None and document_access(m.role, m.status, user_id, row.name, row.shared).read


class DocumentController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/documents"
    tags = ["documents"]  # noqa: RUF012

    @get("", summary="The wedding's live documents the caller may open")
    async def list_documents(
        self, wedding_id: uuid.UUID, identity: Identity, conns: Connections
    ) -> DocumentList:
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            rows = await store.of_wedding(conn, wedding_id)
        uid = identity.user_id
        return DocumentList([_document(r, m, uid) for r in rows if _readable(r, m, uid)])

    @post(
        "",
        summary="Create a live document (vows:<you>, speech:<you>, run_of_show, notes...)",
        status_code=201,
    )
    async def create_document(
        self,
        wedding_id: uuid.UUID,
        data: DocumentCreate,
        identity: Identity,
        conns: Connections,
        request: Request[Any, Any, Any],
    ) -> Document:
        async with conns.pool.acquire() as conn, conn.transaction():
            m = await require_member(conn, wedding_id, identity)
            if not may_create(m.role, m.status, identity.user_id, data.name):
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    "permission_denied",
                    client_ip(request),
                    attempted="create_document",
                    role=m.role.value,
                )
                raise Forbidden(f"role {m.role.value} may not create the document {data.name!r}")
            row = await store.create(conn, wedding_id, data.name, identity.user_id)
            if row is None:
                raise Conflict(f"the wedding has a document {data.name!r} already")
        return _document(row, m, identity.user_id)

    async def _find(
        self, conns: Connections, wedding_id: uuid.UUID, name: str, identity: Identity
    ) -> tuple[store.DocumentRow, wedding_store.Membership]:
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            row = await store.by_name(conn, wedding_id, name) if valid_name(name) else None
        if row is None or not _readable(row, m, identity.user_id):
            raise NotFound("document not found")  # a private document's existence is private
        return row, m

    @get("/{name:str}", summary="One live document")
    async def read_document(
        self, wedding_id: uuid.UUID, name: str, identity: Identity, conns: Connections
    ) -> Document:
        row, m = await self._find(conns, wedding_id, name, identity)
        return _document(row, m, identity.user_id)

    @patch("/{name:str}", summary="Share (or unshare) your private document")
    async def share_document(
        self,
        wedding_id: uuid.UUID,
        name: str,
        data: DocumentPatch,
        identity: Identity,
        conns: Connections,
        documents: DocumentHub,
    ) -> Document:
        row, m = await self._find(conns, wedding_id, name, identity)
        if kind_of(name) is not Kind.PRIVATE:
            raise Invalid("only a private document (vows:, speech:) is shared or unshared")
        if row.owner_id != identity.user_id:
            raise Forbidden("only its member shares a private document")
        async with conns.pool.acquire() as conn:
            await store.set_shared(conn, row.id, data.shared)
            row = await store.by_id(conn, row.id) or row
        await documents.access_changed(wedding_id, row.id)  # open sockets: again
        return _document(row, m, identity.user_id)

    @get(
        "/{name:str}/versions",
        summary="The document's versions: its snapshots, and who changed it since the one before",
    )
    async def versions(
        self, wedding_id: uuid.UUID, name: str, identity: Identity, conns: Connections
    ) -> VersionList:
        row, _ = await self._find(conns, wedding_id, name, identity)
        async with conns.pool.acquire() as conn:
            found = await store.versions(conn, row.id)
        return VersionList([Version(seq=s, created_at=at, authors=a) for s, at, a in found])

    @get("/{name:str}/versions/{seq:int}", summary="The text of one version")
    async def version(
        self, wedding_id: uuid.UUID, name: str, seq: int, identity: Identity, conns: Connections
    ) -> VersionText:
        row, _ = await self._find(conns, wedding_id, name, identity)
        async with conns.pool.acquire() as conn:
            snap = await store.snapshot_at(conn, row.id, seq)
        if snap is None:
            raise NotFound("no such version")
        doc: Doc[Any] = Doc()
        doc.apply_update(snap)
        return VersionText(seq=seq, text=str(doc.get(TEXT, type=Text)))

    @post(
        "/{name:str}/versions/{seq:int}/restore",
        status_code=200,
        summary="Restore a version: one new update makes the text what it was",
    )
    async def restore(
        self, wedding_id: uuid.UUID, name: str, seq: int, identity: Identity, conns: Connections
    ) -> VersionText:
        row, m = await self._find(conns, wedding_id, name, identity)
        if not document_access(m.role, m.status, identity.user_id, name, row.shared).write:
            raise Forbidden(f"role {m.role.value} may not edit {name!r}")
        async with conns.pool.acquire() as conn:
            snap = await store.snapshot_at(conn, row.id, seq)
        if snap is None:
            raise NotFound("no such version")
        old: Doc[Any] = Doc()
        old.apply_update(snap)
        text = str(old.get(TEXT, type=Text))
        # the document as stored now (snapshot + tail), edited into the old text: one
        # update like any client's, so every open editor converges on it
        doc: Doc[Any] = Doc()
        doc.apply_update(await current_state(conns.js, conns.pool, row))
        before = doc.get_state()
        content = doc.get(TEXT, type=Text)
        with doc.transaction():
            del content[:]
            content += text
        update = doc.get_update(before)
        body = update_encoder.encode(
            DocumentUpdate(user_id=identity.user_id, update=update, ts=time.time())
        )
        await conns.js.publish(document_subject(wedding_id, row.id), body, stream=DOCUMENTS.name)
        return VersionText(seq=seq, text=text)
