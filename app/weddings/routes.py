"""Weddings, their members and their audit log: ``/api/weddings``."""

from __future__ import annotations

import uuid
import zoneinfo
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import Parameter

from app.auth import AuthContext, Identity, client_ip
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.sessions import store as session_store
from app.weddings import store
from app.weddings.access import require_member, require_role
from app.weddings.store import Membership
from runtime import control
from runtime.connections import Connections
from runtime.db import audit
from runtime.db.notifications import disable_webhooks_of
from runtime.db.types import Pooled
from streams.api import (
    AuditEntry,
    AuditPage,
    Member,
    MemberPut,
    Wedding,
    WeddingCreate,
    WeddingPatch,
)
from streams.definitions import EVENTS
from streams.limits import INT64_MAX
from streams.permissions import ADMINS, TRANSITIONS, Role
from streams.protocol import reserved_user_id


def _check_timezone(tz: str) -> None:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {tz!r} (use an IANA name such as Europe/Paris)") from None


def _wedding(m: store.Membership) -> Wedding:
    return Wedding(
        id=m.wedding_id,
        name=m.name,
        date=m.date,
        timezone=m.timezone,
        status=m.status,
        role=m.role,
        created_at=m.created_at,
        hot_days=m.hot_days,
    )


class WeddingController(Controller):
    path = "/api/weddings"
    tags = ["weddings"]  # noqa: RUF012

    @post("", summary="Create a wedding; the caller becomes its couple member", status_code=201)
    async def create(
        self,
        data: WeddingCreate,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        request: Request[Any, Any, Any],
    ) -> Wedding:
        _check_timezone(data.timezone)
        # read before the wedding exists: none of its events can be at or below this seq
        events_from = (await conns.js.stream_info(EVENTS.name)).state.last_seq
        async with conns.pool.acquire() as conn, conn.transaction():
            m = await store.create(
                conn,
                name=data.name,
                date=data.date,
                timezone=data.timezone,
                creator=identity.user_id,
                display_name=identity.name,
                email=auth.cipher.seal(identity.email),
                events_from=events_from,
            )
            await audit.record(
                conn,
                m.wedding_id,
                identity.user_id,
                "wedding_created",
                client_ip(request),
                name=data.name,
            )
        return _wedding(m)

    @get("/{wedding_id:uuid}", summary="A wedding the caller is a member of")
    async def read(self, member: Membership) -> Wedding:
        return _wedding(member)

    @patch("/{wedding_id:uuid}", summary="Change name, date, time zone, status or hot_days")
    async def change(
        self,
        wedding_id: uuid.UUID,
        data: WeddingPatch,
        identity: Identity,
        conns: Connections,
        request: Request[Any, Any, Any],
    ) -> Wedding:
        ip = client_ip(request)
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if "timezone" in changes:
            _check_timezone(changes["timezone"])
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, ip, "change_wedding")
            async with conn.transaction():
                current = await store.membership(conn, wedding_id, identity.user_id)
                assert current is not None
                new_status = changes.get("status")
                if new_status is not None and new_status != current.status:
                    if new_status not in TRANSITIONS[current.status]:
                        raise Conflict(
                            f"status cannot move from {current.status.value} to {new_status.value}"
                        )
                    changes["status"] = new_status.value
                elif new_status is not None:
                    del changes["status"]
                await store.update(conn, wedding_id, changes)
                if changes:
                    await audit.record(
                        conn,
                        wedding_id,
                        identity.user_id,
                        "wedding_changed",
                        ip,
                        **{k: str(v) for k, v in changes.items()},
                    )
                updated = await store.membership(conn, wedding_id, identity.user_id)
        assert updated is not None
        if "status" in changes:  # open sockets: read-only (completed) or closed (cancelled)
            await control.status_changed(conns.nc, wedding_id, updated.status)
        return _wedding(updated)

    @get("/{wedding_id:uuid}/members", summary="Members; contact details for couple/planner only")
    async def list_members(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        auth: AuthContext,
    ) -> list[Member]:
        rows = await store.members(db, wedding_id)
        admin = member.role in (Role.COUPLE, Role.PLANNER)
        return [_member(r, auth, contacts=admin or r["user_id"] == identity.user_id) for r in rows]

    @put("/{wedding_id:uuid}/members/{user_id:str}", summary="Add a member or change their role")
    async def put_member(
        self,
        wedding_id: uuid.UUID,
        user_id: str,
        data: MemberPut,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        request: Request[Any, Any, Any],
    ) -> Member:
        ip = client_ip(request)
        if not user_id or len(user_id) > 128:
            raise Invalid("user id must be 1-128 characters")
        if reserved_user_id(user_id):
            raise Invalid(f"user id {user_id!r} is reserved for the system")
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, ip, "manage_members")
            target = await store.member(conn, wedding_id, user_id)
            await _guard_couple(conn, m, identity, ip, target, new_role=data.role)
            async with conn.transaction():
                created = await store.upsert_member(
                    conn,
                    wedding_id,
                    user_id,
                    role=data.role,
                    display_name=data.display_name,
                    email=auth.cipher.seal(data.email),
                    phone=auth.cipher.seal(data.phone),
                    actor=identity.user_id,
                )
                before = None if target is None else target["role"]
                action = "member_added" if created else "member_changed"
                hooks = []
                if data.role not in ADMINS:  # a webhook acts with its owner's authority
                    why = "owner_lost_permission"
                    hooks = await disable_webhooks_of(conn, wedding_id, user_id, why)
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    action,
                    ip,
                    member=user_id,
                    role=data.role.value,
                    previous_role=before,
                    webhooks_disabled=[str(h) for h in hooks],
                )
                row = await store.member(conn, wedding_id, user_id)
        assert row is not None
        if before is not None and before != data.role.value:
            await control.role_changed(conns.nc, wedding_id, user_id, data.role)
        return _member(row, auth, contacts=True)

    @delete("/{wedding_id:uuid}/members/{user_id:str}", summary="Remove a member", status_code=204)
    async def remove_member(
        self,
        wedding_id: uuid.UUID,
        user_id: str,
        identity: Identity,
        conns: Connections,
        request: Request[Any, Any, Any],
    ) -> None:
        ip = client_ip(request)
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, ip, "manage_members")
            target = await store.member(conn, wedding_id, user_id)
            if target is None:
                raise NotFound("member not found")
            await _guard_couple(conn, m, identity, ip, target, new_role=None)
            async with conn.transaction():
                await store.delete_member(conn, wedding_id, user_id)
                ended = await session_store.end(conn, wedding_id, user_id, "member_removed")
                hooks = await disable_webhooks_of(conn, wedding_id, user_id, "owner_removed")
                await audit.record(
                    conn,
                    wedding_id,
                    identity.user_id,
                    "member_removed",
                    ip,
                    member=user_id,
                    role=target["role"],
                    sessions_ended=len(ended),
                    webhooks_disabled=[str(h) for h in hooks],
                )
        await control.role_changed(conns.nc, wedding_id, user_id, None)
        await control.sessions_ended(conns.nc, wedding_id, ended)

    @get("/{wedding_id:uuid}/audit", summary="Audit log, newest first (couple and planner)")
    async def audit_log(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        auth: AuthContext,
        request: Request[Any, Any, Any],
        before: int | None = Parameter(default=None, ge=1, le=INT64_MAX),
        limit: int = Parameter(default=50, ge=1, le=500),
    ) -> AuditPage:
        await require_role(db, member, identity, client_ip(request), "read_audit_log")
        rows = await audit.page(db, wedding_id, before=before, limit=limit + 1)
        contacts = auth.contacts
        for r in rows:
            contacts.open_audit(r["details"])
        items = [msgspec.convert(r, AuditEntry) for r in rows[:limit]]
        return AuditPage(items=items, next_before=items[-1].id if len(rows) > limit else None)


async def _guard_couple(
    conn: Any,
    m: store.Membership,
    who: Identity,
    ip: str | None,
    target: Any,
    new_role: Role | None,
) -> None:
    """Only the couple manage the couple role; a wedding always keeps one couple member."""
    touches_couple = (target is not None and target["role"] == Role.COUPLE.value) or (
        new_role == Role.COUPLE
    )
    if touches_couple and m.role != Role.COUPLE:
        await audit.record(
            conn,
            m.wedding_id,
            who.user_id,
            "permission_denied",
            ip,
            attempted="change_couple",
            role=m.role.value,
        )
        raise Forbidden("only the couple may add, remove or demote a couple member")
    losing_couple = (
        target is not None and target["role"] == Role.COUPLE.value and (new_role != Role.COUPLE)
    )
    if losing_couple and await store.count_role(conn, m.wedding_id, Role.COUPLE) <= 1:
        raise Conflict("a wedding keeps at least one couple member")


def _member(r: Any, auth: AuthContext, *, contacts: bool) -> Member:
    return Member(
        user_id=r["user_id"],
        role=Role(r["role"]),
        display_name=r["display_name"],
        email=auth.cipher.open(r["email_enc"]) if contacts else None,
        phone=auth.cipher.open(r["phone_enc"]) if contacts else None,
        added_at=r["added_at"],
    )
