"""HTTP request and response bodies of the session and wedding APIs (msgspec)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec

from streams.permissions import Access, Role, WeddingStatus

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Timezone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=EMAIL_PATTERN)]
Phone = Annotated[str, msgspec.Meta(max_length=32, pattern=r"^\+?[0-9 ()\-.]{4,32}$")]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WeddingCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    date: dt.date
    timezone: Timezone


class WeddingPatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    date: dt.date | msgspec.UnsetType = msgspec.UNSET
    timezone: Timezone | msgspec.UnsetType = msgspec.UNSET
    status: WeddingStatus | msgspec.UnsetType = msgspec.UNSET
    # days its events stay in JetStream before they are archived (null: server default)
    hot_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | msgspec.UnsetType | None = msgspec.UNSET


class Wedding(msgspec.Struct):
    id: uuid.UUID
    name: str
    date: dt.date
    timezone: str
    status: WeddingStatus
    role: Role  # the caller's role in this wedding
    created_at: dt.datetime
    hot_days: int | None = None


class MemberPut(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    display_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None


class Member(msgspec.Struct):
    user_id: str
    role: Role
    display_name: str | None
    email: str | None
    phone: str | None
    added_at: dt.datetime


class Collaborator(msgspec.Struct):
    user_id: str
    role: Role
    display_name: str | None


class JoinResponse(msgspec.Struct):
    session_id: uuid.UUID
    session_token: str
    expires_at: dt.datetime
    websocket_url: str
    role: Role
    permissions: dict[str, Access]
    last_seq: int
    collaborators: list[Collaborator]
    read_only: bool


class SessionInfo(msgspec.Struct):
    session_id: uuid.UUID
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    device_fingerprint: str | None
    ip: str | None
    user_agent: str | None


class SessionList(msgspec.Struct):
    wedding_id: uuid.UUID
    role: Role
    permissions: dict[str, Access]
    sessions: list[SessionInfo]


class AuditEntry(msgspec.Struct):
    id: int
    actor: str
    action: str
    ip: str | None
    at: dt.datetime
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_before: int | None  # pass as ?before= for the next (older) page


# -- personal data (GDPR) -----------------------------------------------------------------


class PersonalExport(msgspec.Struct):
    """``GET /api/me/export``: everything stored about the caller."""

    user_id: str
    exported_at: dt.datetime
    claims: dict[str, str | None]  # name and email from the caller's token
    memberships: list[dict[str, Any]]  # with their decrypted contact details
    sessions: list[dict[str, Any]]  # devices, IPs, user agents, times
    events: list[dict[str, Any]]  # {wedding_id, seq, event}: every event they authored
    notifications: list[dict[str, Any]]
    preferences: list[dict[str, Any]]
    push_subscriptions: list[dict[str, Any]]
    presence: list[dict[str, Any]]  # minutes present/active per wedding and day
    audit: list[dict[str, Any]]  # what they did, as the audit log recorded it
    # their private documents (with their text) and how many updates of each shared
    # document they wrote (docs/documents.md)
    documents: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ErasureReport(msgspec.Struct):
    """``DELETE /api/me``: what was erased, by store."""

    user_id: str
    weddings: list[uuid.UUID]
    rows_deleted: dict[str, int]
    rows_redacted: dict[str, int]
    messages_deleted: dict[str, int]
    # change requests of theirs that the conflicts worker has not applied yet: they are
    # kept (nothing accepted is lost); erase again once they are applied
    pending_changes: int
    # state changes published (system actor) for fields pointing at them: a task's
    # assignee, a vendor record's member; clients receive them as entity.updated events
    changes_queued: int = 0
