"""Webhook endpoints of a wedding (couple and planner): register, list, remove, re-enable,
and replay failed deliveries. The signing secret is shown once, at registration."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State

from app.access import require_member, require_role
from app.auth import AuthContext, Identity, client_ip
from app.connections import Connections
from app.db import audit
from app.db.notifications import WAKE
from app.db.types import Conn
from app.errors import Conflict, Invalid, NotFound
from config.settings import Settings
from streams.notifications import ReplayResult, Webhook, WebhookCreate
from workers.notifications.channels import DestinationRefused, check_url, new_secret

_COLS = "id, url, events, enabled, disabled_reason, created_at"


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
    return Webhook(id=r["id"], url=r["url"], events=list(r["events"]), enabled=r["enabled"],
                   disabled_reason=r["disabled_reason"], created_at=r["created_at"],
                   secret=secret)  # fmt: skip


class WebhooksController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/webhooks"
    tags = ["webhooks"]  # noqa: RUF012

    async def _admin(self, conn: Conn, wedding_id: uuid.UUID, who: Identity,
                     request: Request[Any, Any, Any], action: str) -> None:  # fmt: skip
        m = await require_member(conn, wedding_id, who)
        await require_role(conn, m, who, client_ip(request), action)

    @post("", summary="Register an endpoint for some event types (`*` wildcards)",
          status_code=201)  # fmt: skip
    async def create(
        self, wedding_id: uuid.UUID, data: WebhookCreate, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> Webhook:  # fmt: skip
        conns: Connections = state.conns
        auth: AuthContext = state.auth
        await _check_destination(data.url, state.settings)
        secret = new_secret()
        async with conns.pool.acquire() as conn, conn.transaction():
            await self._admin(conn, wedding_id, identity, request, "manage_webhooks")
            row = await conn.fetchrow(
                f"""INSERT INTO webhooks (id, wedding_id, url, events, secret_enc, created_by)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLS}""",
                uuid.uuid4(), wedding_id, data.url, data.events, auth.cipher.seal(secret),
                identity.user_id,
            )  # fmt: skip
            assert row is not None
            await audit.record(conn, wedding_id, identity.user_id, "webhook_created",
                               client_ip(request), webhook=str(row["id"]))  # fmt: skip
        return _hook(row, secret)

    @get("", summary="The wedding's webhook endpoints")
    async def list_(
        self, wedding_id: uuid.UUID, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> list[Webhook]:  # fmt: skip
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn:
            await self._admin(conn, wedding_id, identity, request, "manage_webhooks")
            rows = await conn.fetch(
                f"SELECT {_COLS} FROM webhooks WHERE wedding_id = $1 ORDER BY created_at",
                wedding_id)  # fmt: skip
        return [_hook(r) for r in rows]

    @delete("/{hook_id:uuid}", summary="Remove an endpoint", status_code=204)
    async def remove(
        self, wedding_id: uuid.UUID, hook_id: uuid.UUID, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> None:  # fmt: skip
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn, conn.transaction():
            await self._admin(conn, wedding_id, identity, request, "manage_webhooks")
            if not await conn.fetchval(
                "DELETE FROM webhooks WHERE id = $1 AND wedding_id = $2 RETURNING true",
                hook_id, wedding_id):  # fmt: skip
                raise NotFound("webhook not found")

    @post(
        "/{hook_id:uuid}/enable",
        status_code=200,
        summary="Re-enable a disabled endpoint (the caller becomes its owner)",
    )
    async def enable(
        self, wedding_id: uuid.UUID, hook_id: uuid.UUID, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> Webhook:  # fmt: skip
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn:
            await self._admin(conn, wedding_id, identity, request, "manage_webhooks")
            url = await conn.fetchval(
                "SELECT url FROM webhooks WHERE id = $1 AND wedding_id = $2", hook_id, wedding_id
            )
            if url is None:
                raise NotFound("webhook not found")
            await _check_destination(url, state.settings)
            async with conn.transaction():
                # the endpoint now acts with the caller's authority: it stops with it
                row = await conn.fetchrow(
                    f"""UPDATE webhooks SET enabled = true, disabled_at = NULL,
                                            disabled_reason = NULL, created_by = $3
                        WHERE id = $1 AND wedding_id = $2 RETURNING {_COLS}""",
                    hook_id,
                    wedding_id,
                    identity.user_id,
                )
                ip, who, hook = client_ip(request), identity.user_id, str(hook_id)
                await audit.record(conn, wedding_id, who, "webhook_enabled", ip, webhook=hook)
        if row is None:
            raise NotFound("webhook not found")
        return _hook(row)

    @post("/{hook_id:uuid}/replay", summary="Send failed and dead deliveries again",
          status_code=200)  # fmt: skip
    async def replay(
        self, wedding_id: uuid.UUID, hook_id: uuid.UUID, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> ReplayResult:  # fmt: skip
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn, conn.transaction():
            await self._admin(conn, wedding_id, identity, request, "manage_webhooks")
            enabled = await conn.fetchval(
                "SELECT enabled FROM webhooks WHERE id = $1 AND wedding_id = $2",
                hook_id, wedding_id)  # fmt: skip
            if enabled is None:
                raise NotFound("webhook not found")
            if not enabled:
                raise Conflict("the endpoint is disabled: enable it first")
            count = await conn.fetchval(
                """WITH again AS (
                       UPDATE deliveries SET status = 'pending', attempts = 0, due_at = now(),
                                             claimed_by = NULL, reason = 'replayed'
                       WHERE webhook_id = $1 AND status IN ('failed', 'dead') RETURNING 1)
                   SELECT count(*) FROM again""",
                hook_id)  # fmt: skip
            await conn.execute(f"NOTIFY {WAKE}")
        return ReplayResult(requeued=int(count))
