"""When notices go out (docs/notifications.md, issue 7), end to end: real gateways, NATS and
PostgreSQL, the notifications worker's parts in this process with an injected clock, real
local SMTP / SMS / push servers. Presence (a member active in the room is told in app
first), quiet hours in the wedding's time zone, emergencies and their escalation, the daily
digest; and the inbox, preferences and delivery log APIs.

Every clock starts at a fixed instant in the past, so deliveries left pending by other
modules (due at their real time) never fall due here."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from config.settings import Settings
from runtime.connections import Connections
from runtime.presence import Mirror, PresenceTable, presence_bucket
from streams.notifications import DEFAULT_CHANNELS, Category
from tests.kits.notifykit import Clock, add_member, api, deliveries, notifier, notify_settings, say
from tests.kits.providers import Browser, HttpProviders, SmtpServer, providers
from tests.kits.world import World, connect, eventually, recv_type
from workers.notifications import Escalator

UTC = dt.UTC
LONDON = zoneinfo.ZoneInfo("Europe/London")
MORNING = dt.datetime(2026, 7, 14, 10, 0, tzinfo=UTC)  # 11:00 in London (BST)
LATE = dt.datetime(2026, 7, 14, 22, 30, tzinfo=UTC)  # 23:30 in London
NIGHT = {"start": "22:00", "end": "07:00"}
Servers = tuple[SmtpServer, HttpProviders]


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[Servers]:
    async with providers() as found:
        yield found


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    # a closed socket's presence record stays (marked disconnected) for the whole grace:
    # long enough here that no test races its removal
    return {"WEDSYNC_PRESENCE_GRACE": "30"}


@pytest_asyncio.fixture(scope="module")
async def presence(conns: Connections) -> AsyncIterator[PresenceTable]:
    """What the notifications worker knows of who is in the room (the KV mirror)."""
    kv = await presence_bucket(conns.js, replicas=1)
    async with Mirror(kv, lambda change: None) as mirror:
        yield mirror.table


def email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.org"


def phone() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def active(table: PresenceTable, wedding: str, user: str) -> bool:
    return any(r.user_id == user and r.status == "active" for r in table.room(wedding))


async def rows_of(conns: Connections, wedding: str, user: str) -> dict[str, dict[str, Any]]:
    """``user``'s deliveries by channel (one per channel: no escalation rounds)."""
    return {r["channel"]: r for r in await deliveries(conns, wedding) if r["user_id"] == user}


async def settled(conns: Connections, wedding: str, count: int) -> list[dict[str, Any]] | None:
    rows = await deliveries(conns, wedding)
    if len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows):
        return rows
    return None


async def in_app_sent_rest_pending(
    conns: Connections, wedding: str, user: str, waiting: set[str]
) -> dict[str, dict[str, Any]] | None:
    """``user``'s rows once in-app went out and exactly ``waiting`` are held back."""
    rows = await rows_of(conns, wedding, user)
    held = {c for c, r in rows.items() if r["status"] == "pending"}
    if rows.get("in_app", {}).get("status") == "sent" and held == waiting:
        return rows
    return None


async def status(conns: Connections, wedding: str, user: str) -> dict[str, tuple[str, Any]]:
    return {c: (r["status"], r["reason"]) for c, r in (await rows_of(conns, wedding, user)).items()}


async def set_timezone(world: World, tz: str) -> None:
    r = await api(
        world, "PATCH", f"/api/weddings/{world.wedding}", world.couple, json={"timezone": tz}
    )
    assert r.status_code == 200 and r.json()["timezone"] == tz, r.text


async def set_prefs(world: World, user: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api(
        world, "PUT", f"/api/weddings/{world.wedding}/notification-preferences", user, json=body
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def inbox(world: World, user: str, query: str = "") -> dict[str, Any]:
    r = await api(world, "GET", f"/api/notifications?wedding_id={world.wedding}{query}", user)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


# -- presence: a member in the room is told in app first ----------------------------------------


@pytest.mark.parametrize("read", [True, False], ids=["read-in-app", "unread"])
async def test_an_active_member_gets_email_only_if_the_in_app_notice_stays_unread(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
    presence: PresenceTable,
    read: bool,
) -> None:
    smtp, http = servers
    mail = email("may")
    family = await add_member(world, "family", email=mail, name="Aunt May")
    n = notify_settings(settings, smtp, http)
    clock = Clock(MORNING)
    token = await world.join(family)
    async with (
        await connect(world.base, world.wedding, token) as ws,
        notifier(conns, settings, n, world.wedding, clock, presence) as dispatcher,
    ):
        await recv_type(ws, "welcome")
        await eventually(lambda: active(presence, world.wedding, family))
        await say(world, world.couple, "chat", {"text": f"@{family} can you bring the cake?"})
        frame = (await recv_type(ws, "notification"))["notification"]
        assert frame["category"] == "mentions" and "bring the cake" in frame["body"]
        assert frame["wedding_id"] == world.wedding and frame["read_at"] is None
        rows = await eventually(
            lambda: in_app_sent_rest_pending(conns, world.wedding, family, {"email", "push"})
        )
        later = clock.now + dt.timedelta(seconds=n.unseen_after)
        for channel in ("email", "push"):
            assert rows[channel]["reason"] == "unseen"
            assert rows[channel]["due_at"] == later
        assert rows["in_app"]["due_at"] == clock.now
        if read:
            r = await api(world, "POST", f"/api/notifications/{frame['id']}/read", family)
            assert r.status_code == 204, r.text
        clock.advance(n.unseen_after - 1)
        await dispatcher.run_once()
        assert (await status(conns, world.wedding, family))["email"] == ("pending", "unseen")
        clock.advance(1)
        await eventually(lambda: settled(conns, world.wedding, 3))
    got = await status(conns, world.wedding, family)
    if read:
        assert got == {
            "in_app": ("sent", None),
            "email": ("skipped", "read in app"),
            "push": ("skipped", "read in app"),
        }
        assert smtp.to(mail) == []
    else:
        assert got == {
            "in_app": ("sent", None),
            "email": ("sent", "unseen"),
            "push": ("skipped", "no_subscription"),
        }
        (sent,) = smtp.to(mail)
        assert "bring the cake" in sent.message.get_content()


async def test_a_member_who_just_closed_the_app_is_not_in_the_room(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
    presence: PresenceTable,
) -> None:
    smtp, http = servers
    mail = email("may")
    family = await add_member(world, "family", email=mail)
    token = await world.join(family)
    async with await connect(world.base, world.wedding, token) as ws:
        await recv_type(ws, "welcome")
        await eventually(lambda: active(presence, world.wedding, family))
    await eventually(
        lambda: [
            r
            for r in presence.room(world.wedding)
            if r.user_id == family and r.disconnected_at is not None
        ]
    )
    clock = Clock(MORNING)
    async with notifier(
        conns, settings, notify_settings(settings, smtp, http), world.wedding, clock, presence
    ):
        await say(world, world.couple, "chat", {"text": f"@{family} are you there?"})
        rows = await eventually(lambda: _with_email(conns, world.wedding, family))
        # no socket: no live in-app notice to see, so nothing to wait for
        assert (rows["email"]["reason"], rows["email"]["due_at"]) == (None, clock.now)
        await eventually(lambda: smtp.to(mail))


async def _with_email(conns: Connections, wedding: str, user: str) -> dict[str, Any] | None:
    rows = await rows_of(conns, wedding, user)
    return rows if "email" in rows else None


async def test_an_emergency_reaches_an_active_member_everywhere_at_once(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
    presence: PresenceTable,
) -> None:
    smtp, http = servers
    mail, tel = email("pat"), phone()
    planner = await add_member(world, "planner", email=mail, phone=tel, name="Pat")
    vendor = await add_member(world, "vendor", name="DJ Sam")
    browser = Browser(http, f"pat-{uuid.uuid4().hex[:6]}")
    r = await api(
        world, "POST", "/api/notifications/push-subscriptions", planner, json=browser.subscription()
    )
    assert r.status_code == 201, r.text
    n = notify_settings(settings, smtp, http)
    clock = Clock(MORNING)
    token = await world.join(planner)
    async with (
        await connect(world.base, world.wedding, token) as ws,
        notifier(conns, settings, n, world.wedding, clock, presence),
    ):
        await recv_type(ws, "welcome")
        await eventually(lambda: active(presence, world.wedding, planner))
        await say(world, vendor, "emergency", {"text": "Power cut at the venue"})
        frame = (await recv_type(ws, "notification"))["notification"]
        assert frame["category"] == "emergency"
        await eventually(lambda: smtp.to(mail) and http.sms_to(tel) and browser.received())
        await eventually(lambda: settled(conns, world.wedding, 8))  # couple and planner
        rows = await rows_of(conns, world.wedding, planner)
        r = await api(world, "POST", f"/api/notifications/{frame['id']}/ack", planner)
        assert r.status_code == 200 and r.json()["acknowledged_at"], r.text
    assert {c: (row["status"], row["reason"]) for c, row in rows.items()} == {
        c: ("sent", None) for c in ("in_app", "email", "sms", "push")
    }
    assert all(row["due_at"] == clock.now for row in rows.values()), "no waiting for unseen"
    assert [s.form["Body"] for s in http.sms_to(tel)] == [
        "EMERGENCY from DJ Sam: Power cut at the venue"
    ]


# -- quiet hours, in the wedding's time zone ----------------------------------------------------


async def test_quiet_hours_hold_email_and_push_until_they_end_locally(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    await set_timezone(world, "Europe/London")
    mail = email("may")
    family = await add_member(world, "family", email=mail)
    view = await set_prefs(world, family, {"quiet_hours": NIGHT})
    assert view["quiet_hours"] == NIGHT
    clock = Clock(LATE)
    assert LATE.astimezone(LONDON).strftime("%H:%M") == "23:30"
    ends = dt.datetime(2026, 7, 15, 7, 0, tzinfo=LONDON).astimezone(UTC)
    assert ends == dt.datetime(2026, 7, 15, 6, 0, tzinfo=UTC)
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, clock) as dispatcher:
        await say(world, world.couple, "chat", {"text": f"@{family} are the flowers in?"})
        rows = await eventually(
            lambda: in_app_sent_rest_pending(conns, world.wedding, family, {"email", "push"})
        )
        for channel in ("email", "push"):
            assert (rows[channel]["reason"], rows[channel]["due_at"]) == ("quiet_hours", ends)
        assert (await inbox(world, family))["unread"] == 1, "the inbox is not quiet"
        clock.now = ends - dt.timedelta(minutes=1)  # 06:59 in London
        await dispatcher.run_once()
        assert (await status(conns, world.wedding, family))["email"] == ("pending", "quiet_hours")
        clock.now = ends
        await eventually(lambda: smtp.to(mail))
        await eventually(lambda: settled(conns, world.wedding, 3))
    assert await status(conns, world.wedding, family) == {
        "in_app": ("sent", None),
        "email": ("sent", "quiet_hours"),
        "push": ("skipped", "no_subscription"),
    }
    assert len(smtp.to(mail)) == 1


async def test_an_emergency_in_quiet_hours_goes_out_at_once_and_escalates_until_acknowledged(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    await set_timezone(world, "Europe/London")
    tels = {role: phone() for role in ("couple", "planner", "family")}
    partner = await add_member(world, "couple", email=email("kim"), phone=tels["couple"])
    planner = await add_member(world, "planner", email=email("pat"), phone=tels["planner"])
    family = await add_member(world, "family", phone=tels["family"])
    vendor_tel = phone()
    vendor = await add_member(world, "vendor", phone=vendor_tel, name="DJ Sam")
    for user in (partner, planner, family):
        await set_prefs(world, user, {"quiet_hours": NIGHT})
    n = notify_settings(settings, smtp, http, escalate_every=60)
    clock = Clock(LATE)

    def texts(role: str) -> int:
        return len(http.sms_to(tels[role]))

    def both_texted(count: int) -> bool:
        return texts("couple") == count and texts("planner") == count

    async with notifier(conns, settings, n, world.wedding, clock):
        await say(world, vendor, "emergency", {"text": "Power cut at the venue"})
        await eventually(lambda: all(texts(role) == 1 for role in tels), timeout=15)
        rows = await rows_of(conns, world.wedding, planner)
        assert (rows["sms"]["reason"], rows["sms"]["due_at"]) == (None, clock.now)
        assert (rows["email"]["reason"], rows["email"]["due_at"]) == (None, clock.now)
        for round_ in (2, 3):
            clock.advance(60)
            await eventually(functools.partial(both_texted, round_))
        assert texts("family") == 1, "escalation is for the couple and the planner"
        assert http.sms_to(vendor_tel) == [], "the author is not told"
        assert {s.form["Body"] for s in http.sms_to(tels["planner"])} == {
            "EMERGENCY from DJ Sam: Power cut at the venue"
        }
    # the next round is queued while no sender runs, and acknowledged before it goes out
    clock.advance(60)
    assert await Escalator(conns.pool, n, clock).tick() == 1
    page = await inbox(world, planner)
    (note,) = [x for x in page["notifications"] if x["category"] == "emergency"]
    r = await api(world, "POST", f"/api/notifications/{note['id']}/ack", planner)
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_at"] and r.json()["read_at"]
    async with notifier(conns, settings, n, world.wedding, clock):
        sent = await eventually(lambda: settled(conns, world.wedding, 1))
        for _ in range(3):
            clock.advance(60)
            assert await Escalator(conns.pool, n, clock).tick() == 0, "acknowledged: no round"
        await eventually(lambda: settled(conns, world.wedding, len(sent)))
    last = [r for r in await deliveries(conns, world.wedding) if r["key"].endswith(":sms:r3")]
    assert {r["user_id"] for r in last} == {world.couple, partner, planner}
    assert {(r["status"], r["reason"]) for r in last} == {("skipped", "acknowledged")}
    async with conns.pool.acquire() as conn:
        esc = await conn.fetchrow(
            "SELECT round, acknowledged_by FROM escalations WHERE wedding_id = $1",
            uuid.UUID(world.wedding),
        )
    assert esc is not None and (esc["round"], esc["acknowledged_by"]) == (3, planner)
    assert (texts("couple"), texts("planner"), texts("family")) == (3, 3, 1)


# -- preferences --------------------------------------------------------------------------------


async def test_preferences_choose_the_channels_of_a_category(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    mail, tel = email("may"), phone()
    family = await add_member(world, "family", email=mail, phone=tel)
    path = f"/api/weddings/{world.wedding}/notification-preferences"
    defaults = {c.value: [m.value for m in DEFAULT_CHANNELS[c]] for c in Category}
    r = await api(world, "GET", path, family)
    assert r.status_code == 200, r.text
    assert r.json() == {"channels": defaults, "quiet_hours": None, "digest": False}
    view = await set_prefs(world, family, {"channels": {"mentions": ["sms"]}})
    assert view["channels"] == {**defaults, "mentions": ["in_app", "sms"]}
    assert (await api(world, "GET", path, family)).json() == view
    for bad in (
        {"channels": {"mentions": ["fax"]}},
        {"channels": {"gossip": ["sms"]}},
        {"quiet_hours": {"start": "25:00", "end": "07:00"}},
        {"digest": True, "colour": "blue"},
    ):
        r = await api(world, "PUT", path, family, json=bad)
        assert (r.status_code, r.json()["code"]) == (422, "invalid"), (bad, r.text)
    assert (await api(world, "GET", path, family)).json() == view, "a refused PUT changes nothing"
    outsider = "outsider-" + uuid.uuid4().hex[:8]
    for method, body in (("GET", None), ("PUT", {"digest": True})):
        r = await api(world, method, path, outsider, json=body)
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    async with notifier(
        conns, settings, notify_settings(settings, smtp, http), world.wedding, Clock(MORNING)
    ):
        await say(world, world.couple, "chat", {"text": f"@{family} table plan?"})
        await eventually(lambda: http.sms_to(tel))
        rows = await eventually(lambda: settled(conns, world.wedding, 2))
    assert {(r["user_id"], r["channel"], r["status"]) for r in rows} == {
        (family, "in_app", "sent"),
        (family, "sms", "sent"),
    }
    assert smtp.to(mail) == []


# -- the inbox and the delivery log -----------------------------------------------------------


async def test_the_inbox_pages_unread_first_newest_first(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    family = await add_member(world, "family")
    guest = await add_member(world, "guest")
    clock = Clock(MORNING)
    async with notifier(
        conns, settings, notify_settings(settings, smtp, http), world.wedding, clock
    ):
        for i in range(3):
            await say(world, world.couple, "chat", {"text": f"@{family} question {i}"})
            await eventually(functools.partial(_unread, world, family, i + 1))
            clock.advance(60)
    first = await inbox(world, family, "&limit=2")
    assert [x["body"] for x in first["notifications"]] == [
        f"@{family} question {i}" for i in (2, 1)
    ]
    assert (first["unread"], first["next"]) == (3, 2)
    rest = await inbox(world, family, "&limit=2&offset=2")
    assert [x["body"] for x in rest["notifications"]] == [f"@{family} question 0"]
    assert (rest["unread"], rest["next"]) == (3, None)
    exact = await inbox(world, family, "&limit=3")
    assert len(exact["notifications"]) == 3 and exact["next"] is None, "no empty last page"
    newest = first["notifications"][0]
    r = await api(world, "POST", f"/api/notifications/{newest['id']}/read", family)
    assert r.status_code == 204, r.text
    page = await inbox(world, family)
    assert [x["body"][-10:] for x in page["notifications"]] == [
        "question 1",
        "question 0",
        "question 2",
    ], "unread first, then newest first"
    assert page["unread"] == 2 and page["notifications"][2]["read_at"] is not None
    everywhere = (await api(world, "GET", "/api/notifications", family)).json()
    assert everywhere["unread"] == 2 and len(everywhere["notifications"]) == 3
    for action in ("read", "ack"):
        r = await api(world, "POST", f"/api/notifications/{newest['id']}/{action}", guest)
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    r = await api(world, "POST", f"/api/notifications/{uuid.uuid4()}/read", family)
    assert r.status_code == 404
    assert (await inbox(world, guest))["notifications"] == []
    assert (await inbox(world, family))["unread"] == 2, "unchanged by the guest's attempts"


async def _unread(world: World, user: str, count: int) -> bool:
    return bool((await inbox(world, user))["unread"] == count)


async def test_the_delivery_log_is_for_couple_and_planner(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    mail = email("may")
    family = await add_member(world, "family", email=mail)
    planner = await add_member(world, "planner")
    vendor = await add_member(world, "vendor")
    async with notifier(
        conns, settings, notify_settings(settings, smtp, http), world.wedding, Clock(MORNING)
    ):
        await say(world, world.couple, "chat", {"text": f"@{family} and @{planner}, hello"})
        await eventually(lambda: settled(conns, world.wedding, 6))
    path = f"/api/weddings/{world.wedding}/notifications/deliveries"
    r = await api(world, "GET", path, world.couple)
    assert r.status_code == 200, r.text
    log = r.json()["deliveries"]
    assert [x["id"] for x in log] == sorted((x["id"] for x in log), reverse=True)
    mine = {(x["user_id"], x["channel"]): x for x in log}
    sent = mine[(family, "email")]
    assert sent["status"] == "sent" and sent["category"] == "mentions"
    assert [(a["attempt"], a["result"], a["error"]) for a in sent["attempts"]] == [
        (1, "sent", None)
    ]
    skipped = mine[(family, "push")]
    assert [(a["attempt"], a["result"], a["error"]) for a in skipped["attempts"]] == [
        (1, "skipped", "no_subscription")
    ]
    assert mail not in r.text, "the log never shows an address"
    assert (await api(world, "GET", path, planner)).status_code == 200
    page = (await api(world, "GET", f"{path}?limit=2", world.couple)).json()
    assert len(page["deliveries"]) == 2 and page["next_before"] == page["deliveries"][1]["id"]
    older = (await api(world, "GET", f"{path}?before={page['next_before']}", world.couple)).json()
    assert [x["id"] for x in older["deliveries"]] == [x["id"] for x in log[2:]]
    r = await api(world, "GET", path, vendor)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden"), r.text
    r = await api(world, "GET", path, "outsider-" + uuid.uuid4().hex[:8])
    assert r.status_code == 404


# -- the daily digest ---------------------------------------------------------------------------


async def test_the_digest_sends_the_days_email_as_one(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: Servers,
) -> None:
    smtp, http = servers
    mail = email("may")
    family = await add_member(world, "family", email=mail)
    authors = [
        await add_member(world, role, name=name)
        for role, name in (("planner", "Pat"), ("vendor", "DJ Sam"), ("couple", "Kim"))
    ]
    assert (await set_prefs(world, family, {"digest": True}))["digest"] is True
    n = notify_settings(settings, smtp, http, digest_hour=18)
    clock = Clock(MORNING)  # 10:00 in a UTC wedding: the digest is at 18:00 today
    digest_at = dt.datetime(2026, 7, 14, 18, 0, tzinfo=UTC)
    async with notifier(conns, settings, n, world.wedding, clock) as dispatcher:
        for i, author in enumerate(authors):
            await say(world, author, "chat", {"text": f"@{family} note {i}"})
        held = await eventually(lambda: _digest_held(conns, world.wedding, family, 3))
        assert {(r["reason"], r["due_at"]) for r in held} == {("digest", digest_at)}
        clock.now = digest_at - dt.timedelta(seconds=1)
        await dispatcher.run_once()
        assert smtp.to(mail) == []
        clock.now = digest_at
        await eventually(lambda: smtp.to(mail))
        rows = await eventually(lambda: settled(conns, world.wedding, 9))
    (digest,) = smtp.to(mail)
    assert str(digest.message["Subject"]) == "WedSync: 3 update(s) today"
    text = digest.message.get_content()
    for name in ("Pat", "DJ Sam", "Kim"):
        assert f"{name} mentioned you" in text
    for i in range(3):
        assert f"note {i}" in text
    emails = [r for r in rows if r["channel"] == "email"]
    assert [r["status"] for r in emails] == ["sent"] * 3


async def _digest_held(
    conns: Connections, wedding: str, user: str, count: int
) -> list[dict[str, Any]] | None:
    rows = [r for r in await deliveries(conns, wedding) if r["user_id"] == user]
    held = [r for r in rows if r["channel"] == "email" and r["status"] == "pending"]
    others_done = all(
        r["status"] not in ("pending", "sending") for r in rows if r["channel"] != "email"
    )
    return held if len(held) == count and len(rows) == 3 * count and others_done else None
