"""Who hears about what, on which channel (docs/notifications.md), end to end: messages and
changes through real gateways and a real conflicts worker, the notifications worker's parts
in this process with an injected clock, and real local SMTP / SMS / push servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from config.settings import Settings
from runtime.connections import Connections
from tests.kits.notifykit import Clock, add_member, api, deliveries, notifier, notify_settings, say
from tests.kits.providers import Browser, HttpProviders, SmtpServer, providers
from tests.kits.statekit import join_member
from tests.kits.world import World, eventually, worker_process


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[SmtpServer, HttpProviders]]:
    async with providers() as found:
        yield found


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(settings, "conflicts", {"WEDSYNC_APPROVAL_THRESHOLD": "100000"}):
        yield


def by(rows: list[dict[str, Any]], user: str) -> dict[str, str]:
    """channel -> status of ``user``'s deliveries."""
    return {r["channel"]: r["status"] for r in rows if r["user_id"] == user}


async def test_emergency_reaches_everyone_on_every_channel(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    planner = await add_member(world, "planner", email="p@example.org", phone="+15551110001")
    vendor = await add_member(world, "vendor", email="v@example.org", phone="+15551110002")
    guest = await add_member(world, "guest", email="g@example.org")
    browser = Browser(http, "planner-phone")
    r = await api(
        world, "POST", "/api/notifications/push-subscriptions", planner, json=browser.subscription()
    )
    assert r.status_code == 201, r.text
    clock = Clock()
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, clock):
        await say(world, vendor, "emergency", {"text": "Florist van broke down"})
        await eventually(
            lambda: smtp.to("g@example.org") and http.sms_to("+15551110001") and browser.received(),
            timeout=20,
        )
        rows = await eventually(lambda: _settled(conns, world.wedding, 4 * 3 - 1))
    assert by(rows, planner) == {"in_app": "sent", "email": "sent", "sms": "sent", "push": "sent"}
    assert by(rows, guest) == {
        "in_app": "sent",
        "email": "sent",
        "sms": "skipped",
        "push": "skipped",
    }
    assert by(rows, world.couple)["in_app"] == "sent"
    assert by(rows, vendor) == {}, "the author is not told about their own message"
    mail = smtp.to("p@example.org")
    assert len(mail) == 1 and "Florist van broke down" in mail[0].message.get_content()
    assert "EMERGENCY" in str(mail[0].message["Subject"])
    assert [s.form["Body"] for s in http.sms_to("+15551110001")] == [
        f"EMERGENCY from {vendor}: Florist van broke down"
    ]
    assert http.sms_to("+15551110002") == []
    pushed = browser.received()
    assert len(pushed) == 1 and pushed[0]["body"] == "Florist van broke down"
    assert pushed[0]["category"] == "emergency"


async def _settled(conns: Connections, wedding: str, count: int) -> list[dict[str, Any]] | None:
    rows = await deliveries(conns, wedding)
    if len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows):
        return rows
    return None


async def test_mention_tells_the_mentioned_member_only(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    family = await add_member(world, "family", email="f@example.org", name="Aunt May")
    guest = await add_member(world, "guest", email="g2@example.org")
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        await say(world, world.couple, "chat", {"text": f"@{family} can you bring the cake?"})
        rows = await eventually(lambda: _settled(conns, world.wedding, 2))
    assert {(r["user_id"], r["channel"]) for r in rows} == {
        (family, "in_app"),
        (family, "email"),
        (family, "push"),
    }
    assert smtp.to("g2@example.org") == []
    r = await api(world, "GET", f"/api/notifications?wedding_id={world.wedding}", family)
    page = r.json()
    assert page["unread"] == 1
    assert page["notifications"][0]["category"] == "mentions"
    assert "can you bring the cake" in page["notifications"][0]["body"]
    assert (await api(world, "GET", "/api/notifications", guest)).json()["notifications"] == []


async def test_vendor_hears_about_their_timeline_item(
    settings: Settings,
    conns: Connections,
    world: World,
    gateways: list[str],
    servers: tuple[SmtpServer, HttpProviders],
    conflicts_worker: None,
) -> None:
    smtp, http = servers
    vendor = await add_member(world, "vendor", email="dj@example.org")
    other = await add_member(world, "vendor", email="florist@example.org")
    planner = await add_member(world, "planner", email="pl@example.org")
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        m = await join_member(world, gateways[0], planner)
        await m.change(
            "vendors", "v-dj", "create", {"name": "DJ Sam", "category": "music", "member": vendor}
        )
        await m.change(
            "timeline",
            "t-dance",
            "create",
            {
                "title": "First dance",
                "start": "2027-06-12T20:00:00Z",
                "end": "2027-06-12T20:15:00Z",
                "vendor_id": "v-dj",
            },
        )
        await m.event("entity.created", entity_id="t-dance")
        mails = await eventually(lambda: smtp.to("dj@example.org"), timeout=20)
        await m.ws.close()
    assert "First dance" in str(mails[0].message["Subject"])
    assert smtp.to("florist@example.org") == []
    assert smtp.to("pl@example.org") == [], "the planner made the change"
    assert {r["user_id"] for r in await deliveries(conns, world.wedding)} == {vendor}
    del other


async def test_approvals_vendor_status_and_wedding_day_guests(
    settings: Settings,
    conns: Connections,
    world: World,
    gateways: list[str],
    servers: tuple[SmtpServer, HttpProviders],
    conflicts_worker: None,
) -> None:
    smtp, http = servers
    r = await api(
        world,
        "PUT",
        f"/api/weddings/{world.wedding}/members/{world.couple}",
        world.couple,
        json={"role": "couple", "email": "us@example.org"},
    )
    assert r.status_code == 200, r.text
    planner = await add_member(world, "planner", email="plan@example.org")
    caterer = await add_member(world, "vendor", email="food@example.org")
    dj = await add_member(world, "vendor", email="music@example.org")
    family = await add_member(world, "family", email="fam@example.org")
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        p = await join_member(world, gateways[0], planner)
        await p.change(
            "vendors",
            "v-food",
            "create",
            {"name": "Tasty", "category": "Catering", "member": caterer},
        )
        await p.change(
            "vendors", "v-dj", "create", {"name": "DJ", "category": "music", "member": dj}
        )
        await p.change("vendors", "v-food", "update", {"status": "booked"}, base=1)
        await p.change("budget", "b", "create", {"category": "Flowers", "estimated": 1000})
        await p.change("budget", "b", "update", {"estimated": 500_000}, base=1)
        await p.event("approval.requested")
        status = await api(
            world,
            "PATCH",
            f"/api/weddings/{world.wedding}",
            world.couple,
            json={"status": "wedding_day"},
        )
        assert status.status_code == 200, status.text
        f = await join_member(world, gateways[1], family)
        await f.change("guests", "g1", "create", {"name": "Ann Example", "meal": "vegan"})
        await f.event("guests.changed_on_wedding_day")
        await eventually(
            lambda: (
                len(smtp.to("us@example.org")) >= 2
                and smtp.to("food@example.org")
                and smtp.to("plan@example.org")
            ),
            timeout=20,
        )
        await p.ws.close()
        await f.ws.close()
    subjects = sorted(str(m.message["Subject"]) for m in smtp.to("us@example.org"))
    assert subjects == ["Approval needed", "Vendor booked: Tasty"]
    food = smtp.to("food@example.org")
    assert [str(m.message["Subject"]) for m in food] == ["Guest list changed on the wedding day"]
    assert "Ann" not in food[0].message.get_content(), "no guest names to a vendor"
    assert [str(m.message["Subject"]) for m in smtp.to("plan@example.org")] == [
        "Guest list changed on the wedding day"
    ]
    assert smtp.to("music@example.org") == [] and smtp.to("fam@example.org") == []


async def test_a_push_endpoint_cannot_be_taken_over(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    """Issue 22, finding 11: someone who learns a planner's push endpoint registers it
    with keys of their own; the planner's browser still gets the planner's notices, and
    the intruder's row is theirs alone (deleting it leaves the planner's)."""
    smtp, http = servers
    planner = await add_member(world, "planner")
    vendor = await add_member(world, "vendor")
    browser = Browser(http, f"phone-{planner}")
    r = await api(
        world, "POST", "/api/notifications/push-subscriptions", planner, json=browser.subscription()
    )
    assert r.status_code == 201, r.text
    intruder = f"user-{planner}"
    forged = Browser(http, f"phone-{planner}")  # the same endpoint, other keys
    assert forged.endpoint == browser.endpoint
    r = await api(
        world, "POST", "/api/notifications/push-subscriptions", intruder, json=forged.subscription()
    )
    assert r.status_code == 201, r.text
    r = await api(
        world, "DELETE", f"/api/notifications/push-subscriptions/{r.json()['id']}", intruder
    )
    assert r.status_code == 204
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        await say(world, vendor, "emergency", {"text": "Power cut in the marquee"})
        pushed = await eventually(browser.received, timeout=20)
    assert [p["body"] for p in pushed] == ["Power cut in the marquee"]
