"""``/api/me``: the caller's own personal data: export it, or erase it (GDPR)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get

from app.auth import AuthContext, Identity
from app.privacy import erase, export
from config.settings import Settings
from runtime.connections import Connections
from runtime.db import scope as db_scope
from streams.api import ErasureReport, PersonalExport

#: a user's own data across every wedding they are in (their member rows, sessions,
#: notifications, authored content): each query is keyed by the caller's user id
ME = "GDPR export/erase: the caller's own rows across their weddings"


class MeController(Controller):
    path = "/api/me"
    tags = ["privacy"]  # noqa: RUF012

    @get("/export", summary="Everything stored about the caller, as JSON")
    async def export(
        self, identity: Identity, conns: Connections, auth: AuthContext
    ) -> PersonalExport:
        with db_scope.system(ME):
            return await export(conns, auth.cipher, identity, auth.contacts)

    @delete("", summary="Erase the caller's personal data everywhere", status_code=200)
    async def erase(
        self,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        settings: Settings,
        request: Request[Any, Any, Any],
    ) -> ErasureReport:
        partitions = settings.conflicts.partitions
        with db_scope.system(ME):
            done = await erase(conns, auth.cipher, identity.user_id, partitions)
        return ErasureReport(
            user_id=identity.user_id,
            weddings=done.weddings,
            rows_deleted=done.rows_deleted,
            rows_redacted=done.rows_redacted,
            messages_deleted=done.messages,
            pending_changes=done.pending_changes,
            changes_queued=done.changes_queued,
        )
