"""Notifications over HTTP: the caller's inbox (``/api/notifications``), Web Push
subscriptions, per-wedding preferences and the delivery log (couple and planner)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.params import Parameter

from app.auth import Identity, client_ip
from app.errors import NotFound, Unavailable
from app.weddings.access import require_role
from app.weddings.store import Membership
from config.settings import Settings
from runtime.connections import Connections
from runtime.db import notifications as store
from runtime.db import scope as db_scope
from runtime.db.types import Pooled
from streams.limits import INT64_MAX
from streams.notifications import (
    DeliveryPage,
    Notification,
    NotificationPage,
    Preferences,
    PreferencesView,
    PushSubscriptionIn,
    PushSubscriptionOut,
    VapidKey,
)

Limit = Annotated[int, Parameter(ge=1, le=200)]
Before = Annotated[int | None, Parameter(ge=1, le=INT64_MAX)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _view(p: Preferences) -> PreferencesView:
    return PreferencesView(channels=p.effective(), quiet_hours=p.quiet_hours, digest=p.digest)


#: the inbox is the caller's across every wedding they are in: each of its queries is keyed
#: by the caller's user id (app/db/notifications.py), RLS cannot narrow it to one wedding
INBOX = "inbox: the caller's notifications across their weddings, keyed by their user id"


class InboxController(Controller):
    path = "/api/notifications"
    tags = ["notifications"]  # noqa: RUF012

    @get("", summary="The caller's notifications, unread first (optionally one wedding)")
    async def list_(
        self,
        identity: Identity,
        conns: Connections,
        wedding_id: uuid.UUID | None = None,
        offset: Annotated[int, Parameter(ge=0, le=INT64_MAX)] = 0,
        limit: Limit = 50,
    ) -> NotificationPage:
        async with db_scope.system_connection(conns.pool, INBOX) as conn:
            # one more than asked: a next page exists only if it has something on it
            notes, unread = await store.inbox(conn, identity.user_id, wedding_id, offset, limit + 1)
        more = offset + limit if len(notes) > limit else None
        return NotificationPage(notifications=notes[:limit], unread=unread, next=more)

    @post("/{nid:uuid}/read", summary="Mark one notification read", status_code=204)
    async def read(self, nid: uuid.UUID, identity: Identity, conns: Connections) -> None:
        async with db_scope.system_connection(conns.pool, INBOX) as conn:
            if not await store.mark_read(conn, identity.user_id, nid, _now()):
                raise NotFound("notification not found")

    @post(
        "/{nid:uuid}/ack",
        summary="Acknowledge (an emergency: stops its escalation)",
        status_code=200,
    )
    async def ack(self, nid: uuid.UUID, identity: Identity, conns: Connections) -> Notification:
        async with db_scope.system_connection(conns.pool, INBOX) as conn, conn.transaction():
            note = await store.acknowledge(conn, identity.user_id, nid, _now())
        if note is None:
            raise NotFound("notification not found")
        return note

    @get("/push-key", summary="The VAPID public key (applicationServerKey) for Web Push")
    async def push_key(self, settings: Settings) -> VapidKey:
        from runtime.crypto import public_key

        if not settings.notify.vapid_private_key:
            raise Unavailable("Web Push is not configured")
        return VapidKey(public_key=public_key(settings.notify.vapid_private_key))

    @post("/push-subscriptions", summary="Register this browser for Web Push", status_code=201)
    async def subscribe(
        self, data: PushSubscriptionIn, identity: Identity, db: Pooled
    ) -> PushSubscriptionOut:
        keys = data.keys
        row = await store.add_push_subscription(
            db, identity.user_id, data.endpoint, keys.p256dh, keys.auth
        )
        return PushSubscriptionOut(
            id=row["id"], endpoint=row["endpoint"], created_at=row["created_at"]
        )

    @delete("/push-subscriptions/{sid:uuid}", summary="Unregister a browser", status_code=204)
    async def unsubscribe(self, sid: uuid.UUID, identity: Identity, db: Pooled) -> None:
        if not await store.delete_push_subscription(db, identity.user_id, sid):
            raise NotFound("push subscription not found")


class WeddingNotificationsController(Controller):
    path = "/api/weddings/{wedding_id:uuid}"
    tags = ["notifications"]  # noqa: RUF012

    @get("/notification-preferences", summary="The caller's channels, quiet hours, digest")
    async def preferences(
        self, wedding_id: uuid.UUID, identity: Identity, member: Membership, db: Pooled
    ) -> PreferencesView:
        return _view(await store.preferences(db, wedding_id, identity.user_id))

    @put("/notification-preferences", summary="Replace the caller's preferences")
    async def set_preferences(
        self,
        wedding_id: uuid.UUID,
        data: Preferences,
        identity: Identity,
        member: Membership,
        db: Pooled,
    ) -> PreferencesView:
        await store.save_preferences(db, wedding_id, identity.user_id, data)
        return _view(data)

    @get("/notifications/deliveries", summary="Every delivery attempt (couple, planner)")
    async def deliveries(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        request: Request[Any, Any, Any],
        before: Before = None,
        limit: Limit = 100,
    ) -> DeliveryPage:
        await require_role(db, member, identity, client_ip(request), "read_deliveries")
        rows = await store.deliveries(db, wedding_id, before, limit)
        return DeliveryPage(
            deliveries=rows, next_before=rows[-1].id if len(rows) == limit else None
        )
