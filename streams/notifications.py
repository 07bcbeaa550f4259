"""Notification schemas: categories, channels, preferences, the in-app notification, push
subscriptions, webhooks and the delivery log (the HTTP API and the worker share them)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any

import msgspec


class Category(StrEnum):
    EMERGENCY = "emergency"
    APPROVALS = "approvals"
    TIMELINE = "timeline"
    VENDORS = "vendors"
    GUESTS = "guests"
    MENTIONS = "mentions"
    CONFLICTS = "conflicts"


class Medium(StrEnum):
    """A delivery channel (``channel`` on the wire; "medium" here so it is never confused
    with a wedding channel such as ``timeline``)."""

    IN_APP = "in_app"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEBHOOK = "webhook"


#: Channels a member may choose per category (webhooks are per wedding, not per member).
PERSONAL = (Medium.IN_APP, Medium.EMAIL, Medium.SMS, Medium.PUSH)

#: What a member gets until they say otherwise. Emergencies always go everywhere.
DEFAULT_CHANNELS: dict[Category, tuple[Medium, ...]] = {
    Category.EMERGENCY: PERSONAL,
    Category.APPROVALS: (Medium.IN_APP, Medium.EMAIL, Medium.PUSH),
    Category.TIMELINE: (Medium.IN_APP, Medium.EMAIL, Medium.PUSH),
    Category.VENDORS: (Medium.IN_APP, Medium.EMAIL),
    Category.GUESTS: (Medium.IN_APP, Medium.EMAIL, Medium.SMS),
    Category.MENTIONS: (Medium.IN_APP, Medium.PUSH, Medium.EMAIL),
    Category.CONFLICTS: (Medium.IN_APP,),
}

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
Clock = Annotated[str, msgspec.Meta(pattern=_CLOCK.pattern, description="HH:MM, 24 h")]


class QuietHours(msgspec.Struct, forbid_unknown_fields=True):
    """Local times in the wedding's time zone; ``start`` after ``end`` spans midnight."""

    start: Clock
    end: Clock

    def minutes(self) -> tuple[int, int]:
        (sh, sm), (eh, em) = (map(int, t.split(":")) for t in (self.start, self.end))
        return sh * 60 + sm, eh * 60 + em


class Preferences(msgspec.Struct, forbid_unknown_fields=True):
    """``GET/PUT /api/weddings/{id}/notification-preferences``. Categories left out keep
    their defaults; ``in_app`` is always on (it is the inbox)."""

    channels: dict[Category, list[Medium]] = {}
    quiet_hours: QuietHours | None = None
    digest: bool = False  # non-urgent email collected into one email a day

    def media(self, category: Category) -> tuple[Medium, ...]:
        if category is Category.EMERGENCY:
            return PERSONAL
        chosen = self.channels.get(category)
        if chosen is None:
            return DEFAULT_CHANNELS[category]
        return (Medium.IN_APP, *(m for m in PERSONAL[1:] if m in chosen))

    def effective(self) -> dict[str, list[str]]:
        return {c.value: [m.value for m in self.media(c)] for c in Category}


class PreferencesView(msgspec.Struct):
    channels: dict[str, list[str]]  # every category, defaults filled in
    quiet_hours: QuietHours | None
    digest: bool


class Notification(msgspec.Struct):
    """One in-app notification (and the body of the live ``notification`` frame)."""

    id: uuid.UUID
    wedding_id: uuid.UUID
    category: Category
    title: str
    body: str
    event_id: str
    event_type: str
    event_seq: int
    data: dict[str, Any]
    created_at: dt.datetime
    read_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None


class NotificationPage(msgspec.Struct):
    """Unread first, newest first within each; ``next`` is the ``offset`` of the next page."""

    notifications: list[Notification]
    unread: int
    next: int | None


class NotificationFrame(msgspec.Struct, tag="notification"):
    """Server → client over the member's open sockets in that wedding, as it happens."""

    notification: Notification


Base64Url = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+={0,2}$", max_length=200)]


class PushKeys(msgspec.Struct, forbid_unknown_fields=True):
    p256dh: Base64Url
    auth: Base64Url


class PushSubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    """What a browser's ``PushSubscription.toJSON()`` returns (``expirationTime`` ignored)."""

    endpoint: Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=2048)]
    keys: PushKeys
    expirationTime: int | None = None


class PushSubscriptionOut(msgspec.Struct):
    id: uuid.UUID
    endpoint: str
    created_at: dt.datetime


class VapidKey(msgspec.Struct):
    """``applicationServerKey`` for ``pushManager.subscribe``."""

    public_key: str


EventPattern = Annotated[str, msgspec.Meta(pattern=r"^[a-z_.*]{1,64}$")]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=2048)]
    events: Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=50)] = (
        msgspec.field(default_factory=lambda: ["*"])
    )


class Webhook(msgspec.Struct):
    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: dt.datetime
    secret: str | None = None  # only in the response that created it


class ReplayResult(msgspec.Struct):
    requeued: int


class DeliveryAttempt(msgspec.Struct):
    attempt: int
    at: dt.datetime
    result: str
    error: str | None


class DeliveryLog(msgspec.Struct):
    """One (event, recipient, channel) delivery with every attempt; never the address."""

    id: int
    channel: Medium
    category: str  # a notice category, or "webhook"
    user_id: str | None
    webhook_id: uuid.UUID | None
    event_id: str | None
    status: str
    reason: str | None
    attempts: list[DeliveryAttempt]
    created_at: dt.datetime
    due_at: dt.datetime
    sent_at: dt.datetime | None


class DeliveryPage(msgspec.Struct):
    deliveries: list[DeliveryLog]
    next_before: int | None
