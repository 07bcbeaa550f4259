"""Live documents (Yjs): their names, who may read or write each, and the update stored
in JetStream per document (docs/documents.md).

A wedding's documents are named. ``vows:<member>`` and ``speech:<member>`` are *private*:
their member's alone until that member shares them (then readable by the roles that may
read the couple's planning, never by vendors or guests). ``run_of_show`` is the timeline
as prose: it follows the timeline channel, and it is the only document a vendor sees.
Every other name (``notes``, ``seating_notes``...) is a shared planning document following
the tasks channel, vendors excepted.
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import Annotated

import msgspec

from streams.permissions import Access, Channel, Role, WeddingStatus, permissions_for
from streams.subjects import ROOT

DOCS_ROOT = f"{ROOT}.doc"
AWARENESS_ROOT = f"{ROOT}.awareness"

RUN_OF_SHOW = "run_of_show"
#: the document's shared text, by convention (``ydoc.getText("content")``): what versions
#: show and restore; the server stores and relays the whole document whatever it holds
TEXT = "content"
PRIVATE_KINDS = ("vows", "speech")
#: a shared name, or a private kind and the member it belongs to (member ids usable here:
#: letters, digits and ``_.@+-``; the URL path carries the name unescaped)
NAME_PATTERN = r"^(?:[a-z][a-z0-9_]{0,62}|(?:vows|speech):[A-Za-z0-9_.@+\-]{1,128})$"
_NAME = re.compile(NAME_PATTERN)
DocumentName = Annotated[str, msgspec.Meta(min_length=1, max_length=135, pattern=NAME_PATTERN)]

#: roles that may hold a private document, and read one once it is shared
PRIVATE_HOLDERS = frozenset({Role.COUPLE, Role.PLANNER, Role.FAMILY})

_NONE = Access(read=False, write=False)


class Kind(StrEnum):
    PRIVATE = "private"  # vows:<member>, speech:<member>
    RUN_OF_SHOW = "run_of_show"
    SHARED = "shared"  # any other name


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def kind_of(name: str) -> Kind:
    if name == RUN_OF_SHOW:
        return Kind.RUN_OF_SHOW
    if name.partition(":")[0] in PRIVATE_KINDS and ":" in name:
        return Kind.PRIVATE
    return Kind.SHARED


def owner_of(name: str) -> str | None:
    """The member a private document belongs to (None: not a private document)."""
    return name.partition(":")[2] if kind_of(name) is Kind.PRIVATE else None


def document_access(
    role: Role, status: WeddingStatus, user_id: str, name: str, shared: bool
) -> Access:
    """What ``user_id`` (of ``role``) may do with the document ``name`` in a wedding in
    ``status``: derived from the channel matrix (streams/permissions.py), so a completed
    wedding's documents are read-only and a role change changes document access too."""
    kind = kind_of(name)
    perms = permissions_for(role, status)
    if kind is Kind.RUN_OF_SHOW:
        return perms[Channel.TIMELINE.value]
    if role is Role.VENDOR or (role is Role.GUEST and kind is Kind.PRIVATE):
        return _NONE
    if kind is Kind.SHARED:
        return perms[Channel.TASKS.value]
    writable = status not in (WeddingStatus.COMPLETED, WeddingStatus.CANCELLED)
    if owner_of(name) == user_id and role in PRIVATE_HOLDERS:
        return Access(read=True, write=writable)
    return Access(read=shared and role in PRIVATE_HOLDERS, write=False)


def may_create(role: Role, status: WeddingStatus, user_id: str, name: str) -> bool:
    """A private document only by its own member; the others by who may write them."""
    if kind_of(name) is Kind.PRIVATE and owner_of(name) != user_id:
        return False
    return document_access(role, status, user_id, name, shared=False).write


def document_subject(wedding_id: uuid.UUID | str, document_id: uuid.UUID | str) -> str:
    """Durable Yjs updates of one document: ``wedsync.doc.<wedding>.<document>``."""
    return f"{DOCS_ROOT}.{uuid.UUID(str(wedding_id))}.{uuid.UUID(str(document_id))}"


def awareness_subject(wedding_id: uuid.UUID | str, document_id: uuid.UUID | str) -> str:
    """Core NATS (never stored): awareness of one document's editors, across processes."""
    return f"{AWARENESS_ROOT}.{uuid.UUID(str(wedding_id))}.{uuid.UUID(str(document_id))}"


def access_subject(wedding_id: uuid.UUID | str, document_id: uuid.UUID | str) -> str:
    """Core NATS: the document was shared, unshared or deleted (rooms re-read its row)."""
    return awareness_subject(wedding_id, document_id) + ".access"


class DocumentUpdate(msgspec.Struct, frozen=True, array_like=True):
    """One Yjs update as stored in WEDSYNC_DOCS (msgpack). ``origin`` is the gateway
    socket that sent it: that socket applied it already and is not sent it back."""

    user_id: str
    update: bytes
    ts: float
    origin: str = ""


class AwarenessRelay(msgspec.Struct, frozen=True, array_like=True):
    """An awareness message relayed to a document's room in every process (msgpack):
    ``payload`` is the y-protocols awareness update as the client sent it; ``role`` is
    its sender's, for who may see them (streams/presence.py ``can_see``). An empty
    ``payload`` is a query: a room just opened in some process, and every other process
    relays its own sockets' states again."""

    origin: str
    role: Role
    payload: bytes


update_encoder = msgspec.msgpack.Encoder()
update_decoder = msgspec.msgpack.Decoder(DocumentUpdate)
awareness_decoder = msgspec.msgpack.Decoder(AwarenessRelay)
