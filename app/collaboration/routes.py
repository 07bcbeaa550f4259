"""The session API: ``/api/collaboration/join/{wedding_id}`` (join, inspect, leave)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post

from app.auth import AuthContext, Identity, client_ip
from app.errors import Conflict, NotFound
from app.sessions import store as session_store
from app.weddings.access import require_member
from runtime import control
from runtime.connections import Connections
from runtime.db import audit
from runtime.eventlog import last_seq
from streams.api import Collaborator, JoinResponse, SessionInfo, SessionList
from streams.permissions import Role, WeddingStatus, permissions_for
from streams.presence import can_see

FINGERPRINT_HEADER = "x-device-fingerprint"


def websocket_url(request: Request[Any, Any, Any], wedding_id: uuid.UUID) -> str:
    base = str(request.base_url).rstrip("/")
    scheme = "wss" if base.startswith("https") else "ws"
    return f"{scheme}://{base.split('://', 1)[1]}/ws/weddings/{wedding_id}"


class CollaborationController(Controller):
    path = "/api/collaboration/join/{wedding_id:uuid}"
    tags = ["sessions"]  # noqa: RUF012

    @post("", summary="Join a wedding: open a collaboration session", status_code=201)
    async def join(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        request: Request[Any, Any, Any],
    ) -> JoinResponse:
        ip = client_ip(request)
        fingerprint = (request.headers.get(FINGERPRINT_HEADER) or "")[:256] or None
        user_agent = (request.headers.get("user-agent") or "")[:512] or None
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            if m.status == WeddingStatus.CANCELLED:
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    "join_refused",
                    ip,
                    reason="wedding_cancelled",
                )
                raise Conflict("this wedding was cancelled")
            async with conn.transaction():
                new, capped = await session_store.create(
                    conn,
                    wedding_id,
                    identity.user_id,
                    ttl=auth.settings.session_ttl,
                    cap=auth.settings.max_sessions,
                    fingerprint=fingerprint,
                    ip=ip,
                    user_agent=user_agent,
                )
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    "joined",
                    ip,
                    session_id=str(new.id),
                    device_fingerprint=fingerprint,
                    ended_by_cap=[str(s) for s in capped],
                )
            others = await session_store.collaborators(conn, wedding_id)
        read_only = m.status == WeddingStatus.COMPLETED
        return JoinResponse(
            session_id=new.id,
            session_token=new.token,
            expires_at=new.expires_at,
            websocket_url=websocket_url(request, wedding_id),
            role=m.role,
            permissions=permissions_for(m.role, m.status),
            last_seq=await last_seq(conns.js, conns.pool, wedding_id),
            # the presence visibility rule (docs/presence.md): a guest is not told which
            # vendors are around, nor a vendor which guests
            collaborators=[
                Collaborator(
                    user_id=r["user_id"], role=Role(r["role"]), display_name=r["display_name"]
                )
                for r in others
                if can_see(m.role, Role(r["role"]))
            ],
            read_only=read_only,
        )

    @get("", summary="The caller's live sessions for this wedding (asking extends them)")
    async def sessions(
        self, wedding_id: uuid.UUID, identity: Identity, conns: Connections, auth: AuthContext
    ) -> SessionList:
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            rows = await session_store.active(
                conn, wedding_id, identity.user_id, extend_by=auth.settings.session_ttl
            )
        if not rows:
            raise NotFound("no active session for this wedding")
        return SessionList(
            wedding_id=wedding_id,
            role=m.role,
            permissions=permissions_for(m.role, m.status),
            sessions=[
                SessionInfo(
                    session_id=r["id"],
                    created_at=r["created_at"],
                    last_seen_at=r["last_seen_at"],
                    expires_at=r["expires_at"],
                    device_fingerprint=r["device_fingerprint"],
                    ip=r["ip"],
                    user_agent=r["user_agent"],
                )
                for r in sorted(rows, key=lambda r: r["created_at"])
            ],
        )

    @delete("", summary="Leave: end the caller's sessions for this wedding", status_code=204)
    async def leave(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        conns: Connections,
        request: Request[Any, Any, Any],
    ) -> None:
        async with conns.pool.acquire() as conn:
            await require_member(conn, wedding_id, identity)
            async with conn.transaction():
                ended = await session_store.end(conn, wedding_id, identity.user_id, "left")
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    "left",
                    client_ip(request),
                    sessions=[str(s) for s in ended],
                )
        await control.sessions_ended(conns.nc, wedding_id, ended)
