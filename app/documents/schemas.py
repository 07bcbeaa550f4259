"""Request and response bodies of ``/api/weddings/{id}/documents``."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from streams.documents import DocumentName, Kind


class DocumentCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: DocumentName


class DocumentPatch(msgspec.Struct, forbid_unknown_fields=True):
    shared: bool  # a private document's owner shares (or unshares) it


class Document(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: Kind
    owner_id: str | None  # the member of a private document
    shared: bool
    created_by: str
    created_at: dt.datetime
    snapshot_seq: int  # the newest update folded into the stored snapshot
    can_write: bool  # for the caller
    socket_path: str  # the y-websocket server URL is this path's parent (docs/documents.md)


class DocumentList(msgspec.Struct):
    documents: list[Document]


class Version(msgspec.Struct):
    seq: int
    created_at: dt.datetime
    authors: dict[str, int]  # user id -> updates folded into this version since the last


class VersionList(msgspec.Struct):
    versions: list[Version]


class VersionText(msgspec.Struct):
    seq: int
    text: str  # the document's shared text ``content`` at this version
