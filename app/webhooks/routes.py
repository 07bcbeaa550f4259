"""Webhook endpoints of a wedding (couple and planner): register, list, remove, re-enable,
and replay failed deliveries. The signing secret is shown once, at registration."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from litestar import Controller, Request, delete, get, post

from app.auth import AuthContext, Identity, client_ip
from app.errors import Conflict, Invalid, NotFound
from app.webhooks import store
from app.weddings.access import require_member, require_role
from app.weddings.store import Membership
from config.settings import Settings
from runtime.connections import Connections
from runtime.crypto import new_secret
from runtime.db import audit
from runtime.db.types import Pooled
from runtime.destination import DestinationRefused, check_url
from streams.notifications import ReplayResult, Webhook, WebhookCreate

MANAGE = "manage_webhooks"  # the action a refusal is audited as


async def _check_destination(url: str, settings: Settings) -> None:
    """422 unless the URL's host resolves to public addresses only (the dispatcher checks
    again at every send, against the address it connects to)."""
    try:
        await check_url(url, settings.notify.webhook_allow_private)
    except DestinationRefused:
        # one message for unresolvable, private, loopback and link-local alike: the
        # answer must not tell which internal names exist
        raise Invalid(
            "the webhook URL must resolve to public internet addresses only "
            "(private, loopback and link-local destinations are refused)"
        ) from None


def _hook(r: asyncpg.Record, secret: str | None = None) -> Webhook:
    return Webhook(
        id=r["id"],
        url=r["url"],
        events=list(r["events"]),
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        created_at=r["created_at"],
        secret=secret,
    )


class WebhooksController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/webhooks"
    tags = ["webhooks"]  # noqa: RUF012

    @post("", summary="Register an endpoint for some event types (`*` wildcards)", status_code=201)
    async def create(
        self,
        wedding_id: uuid.UUID,
        data: WebhookCreate,
        identity: Identity,
        conns: Connections,
        auth: AuthContext,
        settings: Settings,
        request: Request[Any, Any, Any],
    ) -> Webhook:
        # the name is resolved before a connection is taken: a slow DNS holds none
        await _check_destination(data.url, settings)
        secret = new_secret()
        async with conns.pool.acquire() as conn, conn.transaction():
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, client_ip(request), MANAGE)
            row = await store.create(
                conn, wedding_id, data.url, data.events, auth.cipher.seal(secret), identity.user_id
            )
            await audit.record(
                conn,
                wedding_id,
                identity.user_id,
                "webhook_created",
                client_ip(request),
                webhook=str(row["id"]),
            )
        return _hook(row, secret)

    @get("", summary="The wedding's webhook endpoints")
    async def list_(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        request: Request[Any, Any, Any],
    ) -> list[Webhook]:
        await require_role(db, member, identity, client_ip(request), MANAGE)
        return [_hook(r) for r in await store.of_wedding(db, wedding_id)]

    @delete("/{hook_id:uuid}", summary="Remove an endpoint", status_code=204)
    async def remove(
        self,
        wedding_id: uuid.UUID,
        hook_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        request: Request[Any, Any, Any],
    ) -> None:
        await require_role(db, member, identity, client_ip(request), MANAGE)
        if not await store.delete(db, wedding_id, hook_id):
            raise NotFound("webhook not found")

    @post(
        "/{hook_id:uuid}/enable",
        status_code=200,
        summary="Re-enable a disabled endpoint (the caller becomes its owner)",
    )
    async def enable(
        self,
        wedding_id: uuid.UUID,
        hook_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        settings: Settings,
        request: Request[Any, Any, Any],
    ) -> Webhook:
        ip = client_ip(request)
        await require_role(db, member, identity, ip, MANAGE)
        url = await store.url_of(db, wedding_id, hook_id)
        if url is None:
            raise NotFound("webhook not found")
        await _check_destination(url, settings)
        async with db.transaction():
            row = await store.enable(db, wedding_id, hook_id, identity.user_id)
            await audit.record(
                db, wedding_id, identity.user_id, "webhook_enabled", ip, webhook=str(hook_id)
            )
        if row is None:
            raise NotFound("webhook not found")
        return _hook(row)

    @post(
        "/{hook_id:uuid}/replay", summary="Send failed and dead deliveries again", status_code=200
    )
    async def replay(
        self,
        wedding_id: uuid.UUID,
        hook_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        request: Request[Any, Any, Any],
    ) -> ReplayResult:
        await require_role(db, member, identity, client_ip(request), MANAGE)
        async with db.transaction():
            enabled = await store.is_enabled(db, wedding_id, hook_id)
            if enabled is None:
                raise NotFound("webhook not found")
            if not enabled:
                raise Conflict("the endpoint is disabled: enable it first")
            count = await store.replay(db, hook_id)
        return ReplayResult(requeued=count)
