"""The notifications worker's pure parts (docs/notifications.md, issue 7): the rule table
(who hears about which event), the schedule functions (quiet hours, the daily digest,
retry delays) and the channel choice of a member's preferences. No servers."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.settings import NotifySettings
from streams.notifications import (
    DEFAULT_CHANNELS,
    PERSONAL,
    Category,
    Medium,
    Preferences,
    QuietHours,
)
from streams.permissions import Channel, Role
from streams.protocol import Actor, Event
from workers.notifications.rules import RULES, Member, Notice, WeddingContext, notices
from workers.notifications.schedule import next_digest, quiet_until, retry_after

UTC = dt.UTC
LONDON = "Europe/London"

# -- a wedding as the rules see it ------------------------------------------------------------

COUPLE_A, COUPLE_B = "couple-ann", "couple-bob"
PLANNER = "planner-pat"
DJ, FLORIST, CATERER = "vendor-dj", "vendor-florist", "vendor-cook"
FAMILY, GUEST = "family-may", "guest-gil"
ROLES = {
    COUPLE_A: Role.COUPLE,
    COUPLE_B: Role.COUPLE,
    PLANNER: Role.PLANNER,
    DJ: Role.VENDOR,
    FLORIST: Role.VENDOR,
    CATERER: Role.VENDOR,
    FAMILY: Role.FAMILY,
    GUEST: Role.GUEST,
}
NAMES = {COUPLE_A: "Ann", PLANNER: "Pat", DJ: "DJ Sam", FAMILY: "Aunt May"}
MEMBERS = {u: Member(u, r, NAMES.get(u)) for u, r in ROLES.items()}
# vendor entities: v-dj and v-food have a member; v-flowers is the florist's but unlinked
CTX = WeddingContext(
    MEMBERS, vendor_members={"v-dj": DJ, "v-food": CATERER}, caterers=frozenset({CATERER})
)


def event(
    type_: str,
    actor: str,
    data: dict[str, Any],
    channel: Channel = Channel.CHAT,
    role: Role | None = None,
) -> Event:
    who = Actor(user_id=actor, role=role or ROLES.get(actor, Role.GUEST))
    return Event(id="e-1", type=type_, channel=channel, actor=who, data=data, ts=1.8e9)


def to(found: list[Notice]) -> set[str]:
    users = [n.user_id for n in found]
    assert len(users) == len(set(users)), f"one notice per member: {users}"
    return set(users)


def entity(
    type_: str,
    actor: str,
    kind: str,
    fields: dict[str, Any],
    changed: list[str] | None = None,
    cause: str = "change",
) -> Event:
    channel = {"timeline": Channel.TIMELINE, "vendors": Channel.VENDORS, "guests": Channel.GUESTS}[
        kind
    ]
    data = {
        "entity": kind,
        "entity_id": f"{kind[0]}-1",
        "version": 2,
        "fields": fields,
        "changed": list(fields) if changed is None else changed,
        "cause": cause,
    }
    return event(type_, actor, data, channel)


# -- emergencies --------------------------------------------------------------------------------


def test_emergency_goes_to_every_member_but_its_author() -> None:
    found = notices(event("message", DJ, {"text": "Van broke down"}, Channel.EMERGENCY), CTX)
    assert to(found) == set(MEMBERS) - {DJ}
    for n in found:
        assert n.category is Category.EMERGENCY and n.escalate
        assert n.title == "EMERGENCY from DJ Sam" and n.body == "Van broke down"


def test_only_emergencies_escalate() -> None:
    chat = notices(event("message", COUPLE_A, {"text": f"@{PLANNER} hi"}), CTX)
    assert [(n.user_id, n.escalate) for n in chat] == [(PLANNER, False)]


def test_a_long_emergency_text_is_clipped() -> None:
    (n, *_) = notices(event("message", DJ, {"text": "x" * 1000}, Channel.EMERGENCY), CTX)
    assert len(n.body) == 280 and n.body.endswith("…")


# -- budget approvals ---------------------------------------------------------------------------


def _approval(type_: str, actor: str, requested_by: str) -> Event:
    return event(
        type_,
        actor,
        {
            "approval_id": "a-1",
            "entity": "budget",
            "entity_id": "b-venue",
            "op": "update",
            "fields": {"category": "Venue", "estimated": 900_000},
            "requested_by": requested_by,
            "expires_at": 1.8e9 + 3600,
        },
        Channel.BUDGET,
    )


def test_an_approval_request_goes_to_the_couple_only() -> None:
    found = notices(_approval("approval.requested", PLANNER, PLANNER), CTX)
    assert to(found) == {COUPLE_A, COUPLE_B}
    assert {n.category for n in found} == {Category.APPROVALS}
    assert found[0].body == "Pat asks to update budget item Venue"
    assert found[0].data["approval_id"] == "a-1"


@pytest.mark.parametrize("outcome", ["granted", "denied", "expired"])
def test_an_approval_decision_goes_to_the_requester(outcome: str) -> None:
    decider = "system" if outcome == "expired" else COUPLE_A
    found = notices(_approval(f"approval.{outcome}", decider, PLANNER), CTX)
    assert to(found) == {PLANNER}
    assert found[0].title == f"Budget change {outcome}"
    assert found[0].category is Category.APPROVALS


def test_an_approval_decision_for_a_requester_who_left_tells_nobody() -> None:
    assert notices(_approval("approval.granted", COUPLE_A, "gone-user"), CTX) == []


# -- timeline items of a vendor -------------------------------------------------------------


@pytest.mark.parametrize("type_", ["entity.created", "entity.updated"])
def test_a_timeline_item_tells_its_vendors_member_only(type_: str) -> None:
    fields = {
        "title": "First dance",
        "start": "2027-06-12T20:00:00Z",
        "end": "2027-06-12T20:15:00Z",
        "vendor_id": "v-dj",
    }
    found = notices(entity(type_, PLANNER, "timeline", fields), CTX)
    assert to(found) == {DJ}
    assert found[0].category is Category.TIMELINE
    assert "First dance" in found[0].title


def test_a_timeline_item_of_an_unlinked_vendor_or_none_tells_nobody() -> None:
    for fields in (
        {"title": "Flowers", "vendor_id": "v-flowers"},
        {"title": "Speeches"},
        {"title": "Odd", "vendor_id": 7},
    ):
        assert notices(entity("entity.updated", PLANNER, "timeline", fields), CTX) == []


def test_a_deleted_timeline_item_and_the_vendors_own_change_tell_nobody() -> None:
    gone = entity("entity.deleted", PLANNER, "timeline", {"vendor_id": "v-dj"})
    assert notices(gone, CTX) == []
    own = entity("entity.updated", DJ, "timeline", {"title": "Set", "vendor_id": "v-dj"})
    assert notices(own, CTX) == []


def test_a_cascaded_move_says_why() -> None:
    fields = {"title": "Cake", "start": "s", "end": "e", "vendor_id": "v-food"}
    found = notices(entity("entity.updated", PLANNER, "timeline", fields, cause="cascade"), CTX)
    assert to(found) == {CATERER}
    assert found[0].body.endswith("(moved with the item it depends on)")


# -- vendor status ------------------------------------------------------------------------------


def test_a_vendor_status_change_tells_planner_and_couple_but_not_the_actor() -> None:
    fields = {"name": "DJ Sam", "status": "booked", "member": DJ}
    found = notices(entity("entity.updated", PLANNER, "vendors", fields, ["status"]), CTX)
    assert to(found) == {COUPLE_A, COUPLE_B}
    assert found[0].title == "Vendor booked: DJ Sam" and found[0].category is Category.VENDORS
    by_couple = notices(entity("entity.updated", COUPLE_A, "vendors", fields, ["status"]), CTX)
    assert to(by_couple) == {COUPLE_B, PLANNER}


def test_a_new_vendor_or_another_field_is_not_news() -> None:
    fields = {"name": "DJ Sam", "status": "booked"}
    assert notices(entity("entity.created", PLANNER, "vendors", fields), CTX) == []
    assert notices(entity("entity.updated", PLANNER, "vendors", fields, ["name"]), CTX) == []


# -- guests on the wedding day --------------------------------------------------------------


def _guests_day(actor: str, **extra: Any) -> Event:
    return event(
        "guests.changed_on_wedding_day",
        actor,
        {
            "entity_id": "g-1",
            "op": "update",
            "changed": ["meal", "table"],
            "by": actor,
            **extra,
        },
        Channel.GUESTS,
    )


def test_guest_changes_on_the_day_tell_planner_and_caterer_without_names() -> None:
    # a careless producer adding the guest's fields must not leak them into a notice
    found = notices(
        _guests_day(COUPLE_A, fields={"name": "Zelda Quince", "meal": "fish"}, name="Zelda Quince"),
        CTX,
    )
    assert to(found) == {PLANNER, CATERER}
    for n in found:
        assert n.category is Category.GUESTS
        text = f"{n.title} {n.body} {msgspec.json.encode(n.data).decode()}"
        assert "Zelda" not in text and "Quince" not in text
        assert n.body == "A guest was updated (meal, table)"


def test_a_planner_who_is_also_a_caterer_is_told_once() -> None:
    ctx = WeddingContext(MEMBERS, {"v-food": PLANNER}, frozenset({PLANNER, CATERER}))
    found = notices(_guests_day(COUPLE_A), ctx)
    assert to(found) == {PLANNER, CATERER}
    assert to(notices(_guests_day(PLANNER), ctx)) == {CATERER}, "the actor is never told"


# -- @mentions ----------------------------------------------------------------------------------


def test_a_mention_tells_the_mentioned_members_only() -> None:
    text = f"@{FAMILY} and @{GUEST}, bring the cake? cc @stranger and @{COUPLE_A}"
    found = notices(
        event("message", COUPLE_A, {"text": text, "mentions": [PLANNER, "nobody"]}), CTX
    )
    assert to(found) == {FAMILY, GUEST, PLANNER}, "members only; the author is not told"
    assert {n.category for n in found} == {Category.MENTIONS}
    assert found[0].title == "Ann mentioned you" and found[0].body == text


def test_a_member_mentioned_twice_is_told_once() -> None:
    found = notices(
        event("message", COUPLE_A, {"text": f"@{FAMILY} @{FAMILY}", "mentions": [FAMILY, 3]}), CTX
    )
    assert to(found) == {FAMILY}


def test_chat_without_mentions_and_mentions_elsewhere_tell_nobody() -> None:
    assert notices(event("message", COUPLE_A, {"text": "no one in particular"}), CTX) == []
    assert notices(event("message", COUPLE_A, {"text": f"@{FAMILY}"}, Channel.TASKS), CTX) == []


@pytest.mark.parametrize(
    "text",
    [
        f"thanks @{FAMILY}.",
        f"@{FAMILY}: can you bring the cake?",
        f"ask @{FAMILY}!",
        f"(@{FAMILY})",
    ],
)
def test_a_mention_followed_by_punctuation_still_counts(text: str) -> None:
    # a sentence ending in a mention, or "@name: ..." (the usual way to address someone)
    assert to(notices(event("message", COUPLE_A, {"text": text}), CTX)) == {FAMILY}


# -- conflicts ----------------------------------------------------------------------------------


def test_an_overwritten_change_tells_its_author() -> None:
    data = {
        "entity": "tasks",
        "entity_id": "t-1",
        "field": "title",
        "version": 3,
        "winner": {"user_id": COUPLE_A, "value": "new"},
        "overwritten": {"user_id": PLANNER, "value": "old"},
    }
    found = notices(event("conflict.resolved", COUPLE_A, data, Channel.TASKS), CTX)
    assert to(found) == {PLANNER}
    assert found[0].category is Category.CONFLICTS
    assert found[0].body == "Ann changed title of tasks t-1 after you"
    gone = {**data, "overwritten": {"user_id": "left-the-wedding", "value": "old"}}
    assert notices(event("conflict.resolved", COUPLE_A, gone, Channel.TASKS), CTX) == []


def test_a_rejected_change_tells_its_author_although_they_are_the_actor() -> None:
    data = {"entity": "timeline", "entity_id": "t-1", "reason": "stale", "message": "moved"}
    found = notices(event("conflict.rejected", PLANNER, data, Channel.TIMELINE), CTX)
    assert to(found) == {PLANNER}
    assert found[0].title == "Your change was not applied"
    assert found[0].data["reason"] == "stale"


# -- properties of the whole table ------------------------------------------------------------

EVENT_TYPES = [
    "message",
    "approval.requested",
    "approval.granted",
    "approval.denied",
    "approval.expired",
    "entity.created",
    "entity.updated",
    "entity.deleted",
    "guests.changed_on_wedding_day",
    "conflict.resolved",
    "conflict.rejected",
    "presence",
    "timeline.cascaded",
]
USERS = st.sampled_from([*MEMBERS, "outsider"])


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["timeline", "vendors", "guests", "budget"]))
    data = {
        "entity": kind,
        "entity_id": "x-1",
        "text": draw(
            st.sampled_from(["hi", f"@{FAMILY} @{GUEST}", f"@{DJ} @outsider @{COUPLE_A}"])
        ),
        "mentions": draw(st.lists(USERS, max_size=3)),
        "requested_by": draw(USERS),
        "fields": {
            "vendor_id": draw(st.sampled_from(["v-dj", "v-food", "v-flowers"])),
            "status": "booked",
        },
        "changed": draw(st.lists(st.sampled_from(["status", "name"]), max_size=2)),
        "overwritten": {"user_id": draw(USERS)},
    }
    return event(
        draw(st.sampled_from(EVENT_TYPES)), draw(USERS), data, draw(st.sampled_from(list(Channel)))
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(e=any_event())
def test_every_notice_is_to_a_member_once_never_to_the_actor_but_for_conflicts(e: Event) -> None:
    found = notices(e, CTX)
    users = to(found)
    assert users <= set(MEMBERS)
    if e.actor.user_id in users:
        assert e.type == "conflict.rejected" or e.type == "conflict.resolved"
    assert all(n.escalate == (n.category is Category.EMERGENCY) for n in found)
    matching = [r for r in RULES if r.when(e)]
    assert len(matching) <= 1, "the rules are disjoint: an event matches at most one"
    if found:
        assert {n.category for n in found} == {matching[0].category}


# -- quiet hours --------------------------------------------------------------------------------

NIGHT = QuietHours(start="22:00", end="07:00")


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        # winter (GMT = UTC): 23:30 local, quiet until 07:00 tomorrow
        (at(2026, 1, 14, 23, 30), at(2026, 1, 15, 7)),
        # summer (BST = UTC+1): 23:30 local is 22:30 UTC; 07:00 local is 06:00 UTC
        (at(2026, 7, 14, 22, 30), at(2026, 7, 15, 6)),
        (at(2026, 7, 14, 21, 0), at(2026, 7, 15, 6)),  # 22:00 local: the start is inside
        (at(2026, 7, 14, 23, 5), at(2026, 7, 15, 6)),  # after midnight local
        (at(2026, 7, 15, 5, 59), at(2026, 7, 15, 6)),  # 06:59 local
        # the night clocks go forward (29 March 2026, 01:00 UTC): 23:30 GMT until 07:00 BST
        (at(2026, 3, 28, 23, 30), at(2026, 3, 29, 6)),
        (at(2026, 3, 29, 1, 30), at(2026, 3, 29, 6)),  # 02:30 BST, just after the jump
        # the night clocks go back (25 October 2026, 01:00 UTC): 23:30 BST until 07:00 GMT
        (at(2026, 10, 24, 22, 30), at(2026, 10, 25, 7)),
        (at(2026, 10, 25, 0, 30), at(2026, 10, 25, 7)),  # 01:30 BST, first pass
        (at(2026, 10, 25, 1, 30), at(2026, 10, 25, 7)),  # 01:30 GMT, second pass
    ],
)
def test_quiet_hours_across_midnight_in_london(now: dt.datetime, ends: dt.datetime) -> None:
    assert quiet_until(now, LONDON, NIGHT) == ends


@pytest.mark.parametrize(
    "now",
    [
        at(2026, 7, 14, 20, 59),  # 21:59 BST
        at(2026, 7, 15, 6, 0),  # 07:00 BST: the end is outside
        at(2026, 7, 15, 12, 0),
        at(2026, 1, 15, 7, 0),  # 07:00 GMT
        at(2026, 1, 14, 21, 59),
    ],
)
def test_outside_quiet_hours_nothing_waits(now: dt.datetime) -> None:
    assert quiet_until(now, LONDON, NIGHT) is None


def test_quiet_hours_within_one_day_and_degenerate_ones() -> None:
    day = QuietHours(start="09:00", end="17:30")
    assert quiet_until(at(2026, 7, 14, 8), LONDON, day) == at(2026, 7, 14, 16, 30)
    assert quiet_until(at(2026, 7, 14, 7, 59), LONDON, day) is None
    assert quiet_until(at(2026, 7, 14, 16, 30), LONDON, day) is None
    assert quiet_until(at(2026, 7, 14, 23), LONDON, QuietHours("07:00", "07:00")) is None
    assert quiet_until(at(2026, 7, 14, 23), LONDON, None) is None
    assert quiet_until(at(2026, 7, 14, 23), "UTC", NIGHT) == at(2026, 7, 15, 7)


def test_quiet_hours_ending_in_the_repeated_hour_end_after_now() -> None:
    # 25 October 2026: 01:00-02:00 local happens twice in London (BST, then GMT). At 01:10 GMT
    # (the second pass), quiet hours 00:00-01:30 last until 01:30 GMT, 20 minutes from now;
    # an end in the past would send at once, in the middle of the member's quiet hours.
    now = at(2026, 10, 25, 1, 10)
    ends = quiet_until(now, LONDON, QuietHours("00:00", "01:30"))
    assert ends is not None and ends > now
    assert ends == at(2026, 10, 25, 1, 30)


ZONES = st.sampled_from(
    ["UTC", LONDON, "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]
)
CLOCKS = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
INSTANTS = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1), timezones=st.just(UTC)
)


def _exists(local: dt.datetime) -> bool:
    """Whether a wall clock time happens in its zone (not skipped by a jump forward)."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(now=INSTANTS, tz=ZONES, start=CLOCKS, end=CLOCKS)
@example(now=at(2026, 7, 14, 22, 30), tz=LONDON, start="22:00", end="07:00")
def test_quiet_until_is_the_next_end_of_the_quiet_hours(
    now: dt.datetime, tz: str, start: str, end: str
) -> None:
    quiet = QuietHours(start=start, end=end)
    ends = quiet_until(now, tz, quiet)
    local = now.astimezone(zoneinfo.ZoneInfo(tz))
    s, e = quiet.minutes()
    m = local.hour * 60 + local.minute
    inside = s != e and (s <= m < e if s < e else (m >= s or m < e))
    assert (ends is not None) == inside
    if ends is None:
        return
    # within a day of wall clock time (a day is 23 to 25 hours long, 26 never)
    assert now < ends <= now + dt.timedelta(hours=25)
    end_local = ends.astimezone(zoneinfo.ZoneInfo(tz))
    wanted = dt.datetime.combine(end_local.date(), dt.time(e // 60, e % 60), end_local.tzinfo)
    if _exists(wanted):
        assert (end_local.hour, end_local.minute) == (e // 60, e % 60)
    assert end_local.date() in (local.date(), local.date() + dt.timedelta(days=1))


# -- the daily digest ---------------------------------------------------------------------------


def test_next_digest_is_today_or_tomorrow_at_the_hour_local() -> None:
    assert next_digest(at(2026, 7, 14, 16, 59), LONDON, 18) == at(2026, 7, 14, 17)
    assert next_digest(at(2026, 7, 14, 17), LONDON, 18) == at(2026, 7, 15, 17), "strictly after"
    just_after = at(2026, 7, 14, 17) + dt.timedelta(microseconds=1)
    assert next_digest(just_after, LONDON, 18) == at(2026, 7, 15, 17)
    assert next_digest(at(2026, 1, 14, 17, 59), LONDON, 18) == at(2026, 1, 14, 18)
    assert next_digest(at(2026, 1, 14, 23), "America/New_York", 18) == at(2026, 1, 15, 23)
    # across the change to summer time: 18:00 GMT on Saturday, then 18:00 BST on Sunday
    assert next_digest(at(2026, 3, 28, 18), LONDON, 18) == at(2026, 3, 29, 17)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(now=INSTANTS, tz=ZONES, hour=st.integers(0, 23))
def test_next_digest_is_strictly_after_now_within_a_day(
    now: dt.datetime, tz: str, hour: int
) -> None:
    due = next_digest(now, tz, hour)
    assert now < due <= now + dt.timedelta(hours=25)
    local = due.astimezone(zoneinfo.ZoneInfo(tz))
    wanted = dt.datetime.combine(local.date(), dt.time(hour), local.tzinfo)
    if _exists(wanted):
        assert (local.hour, local.minute, local.second) == (hour, 0, 0)


# -- retries ------------------------------------------------------------------------------------


def test_retry_after_uses_the_schedule_by_failed_attempts() -> None:
    schedule = NotifySettings(retry="30,120,600,1800").retry_schedule()
    assert schedule == (30, 120, 600, 1800)
    assert [retry_after(n, schedule) for n in range(0, 6)] == [None, 30, 120, 600, 1800, None]
    assert retry_after(-1, schedule) is None
    assert retry_after(1, ()) is None


# -- channels of a member's preferences -----------------------------------------------------


def test_emergencies_always_use_every_personal_channel() -> None:
    for p in (
        Preferences(),
        Preferences(channels={Category.EMERGENCY: []}),
        Preferences(channels={Category.EMERGENCY: [Medium.EMAIL]}),
        Preferences(quiet_hours=NIGHT, digest=True),
    ):
        assert p.media(Category.EMERGENCY) == PERSONAL
    assert set(PERSONAL) == {Medium.IN_APP, Medium.EMAIL, Medium.SMS, Medium.PUSH}


def test_in_app_is_always_on_and_categories_left_out_keep_their_defaults() -> None:
    p = Preferences(
        channels={
            Category.MENTIONS: [Medium.SMS],
            Category.VENDORS: [],
            Category.TIMELINE: [
                Medium.PUSH,
                Medium.WEBHOOK,
                Medium.EMAIL,
                Medium.IN_APP,
                Medium.PUSH,
            ],
        }
    )
    assert p.media(Category.MENTIONS) == (Medium.IN_APP, Medium.SMS)
    assert p.media(Category.VENDORS) == (Medium.IN_APP,)
    assert p.media(Category.TIMELINE) == (Medium.IN_APP, Medium.EMAIL, Medium.PUSH)
    for c in (Category.APPROVALS, Category.GUESTS, Category.CONFLICTS):
        assert p.media(c) == DEFAULT_CHANNELS[c]
    assert set(p.effective()) == {c.value for c in Category}
    assert p.effective()["mentions"] == ["in_app", "sms"]
    assert Preferences().effective() == {
        c.value: [m.value for m in DEFAULT_CHANNELS[c]] for c in Category
    }


def test_every_default_includes_in_app_first() -> None:
    assert set(DEFAULT_CHANNELS) == set(Category)
    assert all(ms[0] is Medium.IN_APP for ms in DEFAULT_CHANNELS.values())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    chosen=st.dictionaries(
        st.sampled_from(list(Category)), st.lists(st.sampled_from(list(Medium)), max_size=6)
    )
)
def test_media_is_in_app_then_chosen_personal_channels(
    chosen: dict[Category, list[Medium]],
) -> None:
    p = Preferences(channels=chosen)
    for c in Category:
        media = p.media(c)
        assert media[0] is Medium.IN_APP and len(set(media)) == len(media)
        assert set(media) <= set(PERSONAL)
        if c is Category.EMERGENCY:
            assert media == PERSONAL
        elif c in chosen:
            assert set(media) == {Medium.IN_APP} | (set(chosen[c]) & set(PERSONAL))
        else:
            assert media == DEFAULT_CHANNELS[c]


def test_preferences_reject_unknown_channels_categories_and_clocks() -> None:
    decode = msgspec.json.Decoder(Preferences).decode
    chosen = decode(b'{"channels": {"mentions": ["sms"]}}').channels
    assert chosen == {Category.MENTIONS: [Medium.SMS]}
    for bad in (
        b'{"channels": {"mentions": ["fax"]}}',
        b'{"channels": {"gossip": ["sms"]}}',
        b'{"quiet_hours": {"start": "25:00", "end": "07:00"}}',
        b'{"quiet_hours": {"start": "7:00", "end": "07:00"}}',
        b'{"quiet_hours": {"start": "22:00"}}',
        b'{"colour": "blue"}',
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(bad)
