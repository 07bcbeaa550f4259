"""``GET /api/weddings/{id}/presence``: who is here now, as the caller may see it; and
``.../presence/analytics``: active minutes per member per day, for the couple and planner."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter

from app.auth import Identity, client_ip
from app.errors import Invalid
from app.gateway import Hub
from app.weddings.access import require_role
from app.weddings.store import Membership
from runtime.db import presence_minutes
from runtime.db.types import Pooled
from streams.presence import UserPresence, group_by_user


class PresenceSnapshot(msgspec.Struct):
    wedding_id: str
    users: list[UserPresence]


class MemberMinutes(msgspec.Struct):
    user_id: str
    display_name: str | None
    role: str | None  # null once the member has left the wedding
    active_minutes: int
    present_minutes: int


class DayActivity(msgspec.Struct):
    date: dt.date
    members: list[MemberMinutes]


class PresenceAnalytics(msgspec.Struct):
    wedding_id: str
    timezone: str
    first: dt.date
    last: dt.date
    days: list[DayActivity]  # only days on which someone was connected


MAX_DAYS = 366


def _range(first: dt.date | None, last: dt.date | None, tz: str) -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(zoneinfo.ZoneInfo(tz)).date()
    last = last or today
    try:
        first = first or last - dt.timedelta(days=29)
    except OverflowError:  # `to` in the first month of year 1
        raise Invalid("`to` is too early") from None
    if first > last:
        raise Invalid("`from` is after `to`")
    if (last - first).days >= MAX_DAYS:
        raise Invalid(f"at most {MAX_DAYS} days per request")
    return first, last


class PresenceController(Controller):
    path = "/api/weddings/{wedding_id:uuid}/presence"
    tags = ["presence"]  # noqa: RUF012

    @get("", summary="Connected members grouped by user, filtered by the presence visibility rule")
    async def snapshot(
        self, wedding_id: uuid.UUID, member: Membership, hub: Hub
    ) -> PresenceSnapshot:
        # a device within its reconnect grace still counts as here, as in the welcome
        records = await hub.presence_now(wedding_id)
        users = group_by_user(records, member.role)
        return PresenceSnapshot(wedding_id=str(wedding_id), users=users)

    @get("/analytics", summary="Active and connected minutes per member per day (couple, planner)")
    async def analytics(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        member: Membership,
        db: Pooled,
        request: Request[Any, Any, Any],
        first: Annotated[dt.date | None, Parameter(query="from")] = None,
        last: Annotated[dt.date | None, Parameter(query="to")] = None,
    ) -> PresenceAnalytics:
        await require_role(db, member, identity, client_ip(request), "read_presence_analytics")
        first, last = _range(first, last, member.timezone)
        rows = await presence_minutes.daily(db, wedding_id, first, last)
        days: dict[dt.date, DayActivity] = {}
        for r in rows:
            day = days.setdefault(r.day, DayActivity(r.day, []))
            day.members.append(
                MemberMinutes(
                    r.user_id, r.display_name, r.role, r.active_minutes, r.present_minutes
                )
            )
        return PresenceAnalytics(str(wedding_id), member.timezone, first, last, list(days.values()))
