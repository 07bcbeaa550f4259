"""Who hears about what: the one rule table (docs/notifications.md mirrors it).

Pure: an event and what the worker knows about the wedding in, notices out. A member is
never told about their own action, except the conflict notices, which are about it.
Notice texts carry no contact details and no guest names (a caterer hears that the guest
list changed, not whose meal).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.notifications import Category
from streams.permissions import Role
from streams.protocol import Event

_MENTION = re.compile(r"@([A-Za-z0-9_:.\-]{1,128})")
CATERING = frozenset({"catering", "caterer", "food"})
TEXT_LIMIT = 280
_DONE = {"create": "added", "update": "updated", "delete": "removed"}


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: Role
    display_name: str | None


@dataclass(frozen=True, slots=True)
class WeddingContext:
    """What the rules may look at besides the event."""

    members: dict[str, Member]
    vendor_members: dict[str, str] = field(default_factory=dict)  # vendor entity id -> user
    caterers: frozenset[str] = frozenset()  # users linked to a catering vendor entity

    def name(self, user_id: str) -> str:
        m = self.members.get(user_id)
        return (m.display_name if m and m.display_name else None) or user_id

    def with_role(self, *roles: Role) -> list[str]:
        return [u for u, m in self.members.items() if m.role in roles]


@dataclass(frozen=True, slots=True)
class Notice:
    user_id: str
    category: Category
    title: str
    body: str
    data: dict[str, Any]
    escalate: bool = False  # emergency: SMS rounds to couple and planner until acknowledged


Recipients = Callable[[Event, WeddingContext], Iterable[str]]
Text = Callable[[Event, WeddingContext], tuple[str, str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: Category
    when: Callable[[Event], bool]
    who: Recipients
    text: Text
    include_actor: bool = False


def _clip(s: object) -> str:
    text = str(s or "")
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _is_entity(kind: str) -> Callable[[Event], bool]:
    return lambda e: e.type.startswith("entity.") and e.data.get("entity") == kind


# -- recipients ----------------------------------------------------------------------------


def _everyone(e: Event, ctx: WeddingContext) -> Iterable[str]:
    return ctx.members


def _roles(*roles: Role) -> Recipients:
    return lambda e, ctx: ctx.with_role(*roles)


def _requester(e: Event, ctx: WeddingContext) -> Iterable[str]:
    who = e.data.get("requested_by")
    return [who] if isinstance(who, str) else []


def _item_vendor(e: Event, ctx: WeddingContext) -> Iterable[str]:
    vendor = (e.data.get("fields") or {}).get("vendor_id")
    user = ctx.vendor_members.get(vendor) if isinstance(vendor, str) else None
    return [user] if user else []


def _planner_and_caterers(e: Event, ctx: WeddingContext) -> Iterable[str]:
    return [*ctx.with_role(Role.PLANNER), *ctx.caterers]


def mentioned(e: Event, ctx: WeddingContext) -> list[str]:
    """``data.mentions`` (user ids) and ``@user_id`` in ``data.text``, members only."""
    named = e.data.get("mentions")
    found = [u for u in named if isinstance(u, str)] if isinstance(named, list) else []
    for word in _MENTION.findall(str(e.data.get("text") or "")):
        # "thanks @may." / "@may: can you": trailing punctuation is not part of the id
        found.append(word if word in ctx.members else word.rstrip(".:-"))
    return [u for u in dict.fromkeys(found) if u in ctx.members]


def _overwritten(e: Event, ctx: WeddingContext) -> Iterable[str]:
    who = (e.data.get("overwritten") or {}).get("user_id")
    return [who] if isinstance(who, str) else []


def _author(e: Event, ctx: WeddingContext) -> Iterable[str]:
    return [e.actor.user_id]


# -- texts -----------------------------------------------------------------------------------


def _emergency(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    text = _clip(e.data.get("text") or e.data.get("message") or "Emergency")
    return f"EMERGENCY from {ctx.name(e.actor.user_id)}", text, {"text": text}


def _approval(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    d = e.data
    item = (d.get("fields") or {}).get("category") or d.get("entity_id")
    data = {"approval_id": d.get("approval_id"), "entity_id": d.get("entity_id")}
    if e.type == "approval.requested":
        who = ctx.name(str(d.get("requested_by") or e.actor.user_id))
        return (
            "Approval needed",
            f"{who} asks to {d.get('op', 'change')} budget item {item}",
            {**data, "expires_at": d.get("expires_at")},
        )
    outcome = e.type.rsplit(".", 1)[1]
    return f"Budget change {outcome}", f"Your change to budget item {item} was {outcome}", data


def _timeline(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    f = e.data.get("fields") or {}
    title = _clip(f.get("title") or e.data.get("entity_id"))
    verb = e.type.rsplit(".", 1)[1]
    why = " (moved with the item it depends on)" if e.data.get("cause") == "cascade" else ""
    data = {"entity_id": e.data.get("entity_id"), "start": f.get("start"), "end": f.get("end")}
    return f"Timeline {verb}: {title}", f"{title}: {f.get('start')} to {f.get('end')}{why}", data


def _vendor_status(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    f = e.data.get("fields") or {}
    name = _clip(f.get("name") or e.data.get("entity_id"))
    return (
        f"Vendor {f.get('status')}: {name}",
        f"{ctx.name(e.actor.user_id)} set {name} to {f.get('status')}",
        {"entity_id": e.data.get("entity_id"), "status": f.get("status")},
    )


def _guests_day(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    changed = [str(c) for c in e.data.get("changed") or []]
    what = f" ({', '.join(changed)})" if changed else ""
    return (
        "Guest list changed on the wedding day",
        f"A guest was {_DONE.get(str(e.data.get('op')), 'changed')}{what}",
        {"op": e.data.get("op"), "changed": changed},
    )


def _mention(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    text = _clip(e.data.get("text"))
    return f"{ctx.name(e.actor.user_id)} mentioned you", text, {"text": text}


def _conflict(e: Event, ctx: WeddingContext) -> tuple[str, str, dict[str, Any]]:
    d = e.data
    item = f"{d.get('entity')} {d.get('entity_id')}"
    if e.type == "conflict.resolved":
        winner = (d.get("winner") or {}).get("user_id")
        return (
            "Your change was overwritten",
            f"{ctx.name(str(winner))} changed {d.get('field')} of {item} after you",
            {"entity": d.get("entity"), "entity_id": d.get("entity_id")},
        )
    return (
        "Your change was not applied",
        f"{item}: {d.get('reason')}",
        {"entity": d.get("entity"), "entity_id": d.get("entity_id"), "reason": d.get("reason")},
    )


def _status_changed(e: Event) -> bool:
    # an update that moved the status (a new vendor is not news to the couple yet)
    return (
        _is_entity("vendors")(e)
        and e.type == "entity.updated"
        and ("status" in (e.data.get("changed") or []))
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "emergency message: everyone, every channel, escalated",
        Category.EMERGENCY,
        lambda e: e.type == "message" and e.channel == "emergency",
        _everyone,
        _emergency,
    ),
    Rule(
        "budget approval requested: the couple",
        Category.APPROVALS,
        lambda e: e.type == "approval.requested",
        _roles(Role.COUPLE),
        _approval,
    ),
    Rule(
        "budget approval decided: the requester",
        Category.APPROVALS,
        lambda e: e.type in ("approval.granted", "approval.denied", "approval.expired"),
        _requester,
        _approval,
    ),
    Rule(
        "timeline item of a vendor changed: that vendor",
        Category.TIMELINE,
        lambda e: _is_entity("timeline")(e) and e.type != "entity.deleted",
        _item_vendor,
        _timeline,
    ),
    Rule(
        "vendor status changed: planner and couple",
        Category.VENDORS,
        _status_changed,
        _roles(Role.PLANNER, Role.COUPLE),
        _vendor_status,
    ),
    Rule(
        "guests changed on the wedding day: planner and caterer",
        Category.GUESTS,
        lambda e: e.type == "guests.changed_on_wedding_day",
        _planner_and_caterers,
        _guests_day,
    ),
    Rule(
        "@mention in chat: the mentioned member",
        Category.MENTIONS,
        lambda e: e.type == "message" and e.channel == "chat",
        mentioned,
        _mention,
    ),
    Rule(
        "change overwritten: its author",
        Category.CONFLICTS,
        lambda e: e.type == "conflict.resolved",
        _overwritten,
        _conflict,
        include_actor=True,
    ),
    Rule(
        "change rejected: its author",
        Category.CONFLICTS,
        lambda e: e.type == "conflict.rejected",
        _author,
        _conflict,
        include_actor=True,
    ),
)


def notices(event: Event, ctx: WeddingContext) -> list[Notice]:
    """Every notice ``event`` causes, at most one per member (the first rule wins)."""
    out: dict[str, Notice] = {}
    for rule in RULES:
        if not rule.when(event):
            continue
        targets = [u for u in rule.who(event, ctx) if u in ctx.members]
        if not targets:
            continue
        title, body, data = rule.text(event, ctx)
        for user in targets:
            if user in out or (user == event.actor.user_id and not rule.include_actor):
                continue
            out[user] = Notice(
                user, rule.category, title, body, data, escalate=rule.category is Category.EMERGENCY
            )
    return list(out.values())
