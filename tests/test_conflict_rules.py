"""Each conflict rule (workers/conflicts/engine.py) through the real path, as users notice
it: change frames on real sockets of two gateways, a real `wedsync worker conflicts`
process, the events members receive, ``/state``, the approvals API and the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from config.settings import Settings
from streams.permissions import MATRIX, Role
from streams.state import CHANNEL_OF, EntityKind
from tests.kits.statekit import Member, join_member, quiesce, wedding_state, without_empty
from tests.kits.world import World, worker_process

THRESHOLD = 100_000  # minor units; the worker below runs with it


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(
        settings, "conflicts", {"WEDSYNC_APPROVAL_THRESHOLD": str(THRESHOLD)}
    ):
        yield


def at(hour: int, minute: int = 0) -> str:
    """A time on the wedding day, as the worker stores it (UTC, ``Z``)."""
    return f"2027-06-12T{hour:02d}:{minute:02d}:00Z"


def held(m: Member, kind: str, entity_id: str) -> dict[str, Any]:
    """The entity as ``m`` folded it (which must hold it)."""
    found = m.entity(kind, entity_id)
    assert found is not None, (m.user, kind, entity_id)
    return found


def conflict_events(m: Member) -> list[dict[str, Any]]:
    return [e for e in m.events if e["type"].startswith("conflict.")]


async def set_status(world: World, status: str) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.patch(
            f"/api/weddings/{world.wedding}",
            headers=world.auth(world.couple),
            json={"status": status},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status


async def acked(m: Member, cid: str) -> int:
    frame = await m.ack(cid)
    assert frame["type"] == "ack", frame
    seq: int = frame["seq"]
    return seq


async def two_members(
    world: World, gateways: list[str], role: str = "planner"
) -> tuple[Member, Member]:
    """The couple on the first gateway, a new member with ``role`` on the second."""
    other = await world.add(role)
    return (
        await join_member(world, gateways[0], world.couple),
        await join_member(world, gateways[1], other),
    )


async def test_stale_change_to_untouched_fields_merges(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, b = await two_members(world, gateways)
    await acked(a, await a.change("tasks", "t", "create", {"title": "Book florist"}))
    # both edit version 1, each a field the other leaves alone
    await acked(b, await b.change("tasks", "t", "update", {"title": "Book florist + cake"}, base=1))
    await acked(
        a, await a.change("tasks", "t", "update", {"done": True, "assignee": "ann"}, base=1)
    )
    await quiesce(world, [a, b])
    merged = {
        "version": 3,
        "fields": {"title": "Book florist + cake", "assignee": "ann", "due": None, "done": True},
    }
    for m in (a, b):
        assert m.entity("tasks", "t") == merged
        assert conflict_events(m) == []
    assert (await wedding_state(world, b.user))["entities"]["tasks"] == {"t": merged}


@pytest.mark.parametrize("later", ["couple", "planner"])
async def test_same_field_later_change_wins_and_overwritten_author_is_told(
    world: World, gateways: list[str], conflicts_worker: None, later: str
) -> None:
    a, b = await two_members(world, gateways)
    first, second = (b, a) if later == "couple" else (a, b)
    await acked(a, await a.change("guests", "g", "create", {"name": "Ann", "table": "1"}))
    await acked(first, await first.change("guests", "g", "update", {"table": "first"}, base=1))
    cid = await second.change("guests", "g", "update", {"table": "second", "rsvp": "yes"}, base=1)
    await acked(second, cid)
    await quiesce(world, [a, b])
    for m in (a, b):
        assert held(m, "guests", "g")["fields"]["table"] == "second"
        assert held(m, "guests", "g")["version"] == 3
        [resolved] = m.seen("conflict.resolved", cid)
        assert resolved["data"]["entity_id"] == "g" and resolved["data"]["field"] == "table"
        assert resolved["data"]["winner"] == {"user_id": second.user, "value": "second"}
        assert resolved["data"]["overwritten"] == {"user_id": first.user, "value": "first"}
        assert resolved["data"]["version"] == 3
        assert [e for e in conflict_events(m) if e is not resolved] == []  # rsvp merged
    state = await wedding_state(world, world.couple)
    assert state["entities"]["guests"]["g"]["fields"]["rsvp"] == "yes"
    assert state["entities"]["guests"] == a.state["guests"] == b.state["guests"]


@pytest.mark.parametrize("status", ["planning", "wedding_day"])
async def test_concurrent_time_moves_rejected_only_on_the_wedding_day(
    world: World, gateways: list[str], conflicts_worker: None, status: str
) -> None:
    a, b = await two_members(world, gateways)
    await acked(
        a,
        await a.change(
            "timeline", "speech", "create", {"title": "Speeches", "start": at(14), "end": at(15)}
        ),
    )
    if status == "wedding_day":
        await set_status(world, status)
    await acked(b, await b.change("timeline", "speech", "update", {"start": at(14, 30)}, base=1))
    cid = await a.change("timeline", "speech", "update", {"start": at(13)}, base=1)  # stale
    await acked(a, cid)
    await quiesce(world, [a, b])
    state = (await wedding_state(world, b.user))["entities"]["timeline"]
    speech = state["speech"]["fields"]
    if status == "wedding_day":
        for m in (a, b):
            [rejected] = m.seen("conflict.rejected", cid)
            assert rejected["data"]["reason"] == "stale"
            assert rejected["data"]["fields"] == ["start"]
            assert rejected["data"]["current"]["version"] == 2
            assert rejected["data"]["current"]["fields"]["start"] == at(14, 30)
            assert m.seen("conflict.resolved") == []
        # the first move stands (the end moved with it)
        assert state["speech"]["version"] == 2
        assert (speech["start"], speech["end"]) == (at(14, 30), at(15, 30))
    else:
        for m in (a, b):
            assert m.seen("conflict.rejected") == []
            [resolved] = m.seen("conflict.resolved", cid)
            assert resolved["data"]["field"] == "start"
            assert resolved["data"]["winner"] == {"user_id": a.user, "value": at(13)}
            assert resolved["data"]["overwritten"] == {"user_id": b.user, "value": at(14, 30)}
        assert state["speech"]["version"] == 3
        assert (speech["start"], speech["end"]) == (at(13), at(14))
    assert state == a.state["timeline"] == b.state["timeline"]


async def test_delete_wins_over_concurrent_updates(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, b = await two_members(world, gateways)
    for t in ("t1", "t2"):
        await acked(a, await a.change("tasks", t, "create", {"title": t}))
    # t1: the delete comes first; the update based on the version before it is refused
    await acked(b, await b.change("tasks", "t1", "delete", base=1))
    late = await a.change("tasks", "t1", "update", {"done": True}, base=1)
    await acked(a, late)
    # t2: the update comes first and applies; the delete from version 1 still wins
    await acked(a, await a.change("tasks", "t2", "update", {"title": "t2!"}, base=1))
    await acked(b, await b.change("tasks", "t2", "delete", base=1))
    again = await a.change("tasks", "t1", "create", {"title": "t1 again"})
    await acked(a, again)
    await quiesce(world, [a, b])
    for m in (a, b):
        [rejected] = m.seen("conflict.rejected", late)
        assert rejected["data"]["reason"] == "deleted" and rejected["data"]["current"] is None
        assert m.seen("conflict.rejected", again)[0]["data"]["reason"] == "deleted"
        assert [e["data"]["version"] for e in m.seen("entity.deleted")] == [2, 3]
        assert without_empty(m.state) == {}
    for user in (a.user, b.user):
        assert without_empty((await wedding_state(world, user))["entities"]) == {}


async def test_invalid_bases_are_rejected(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, b = await two_members(world, gateways)
    await acked(
        a, await a.change("timeline", "e", "create", {"title": "x", "start": at(10), "end": at(11)})
    )
    ahead = await a.change("timeline", "e", "update", {"title": "y"}, base=7)
    early = await a.change("timeline", "e", "update", {"end": at(9)}, base=1)  # before start
    missing = await b.change("timeline", "nope", "update", {"title": "y"}, base=1)
    twice = await b.change("timeline", "e", "create", {"title": "x", "start": at(1), "end": at(2)})
    await quiesce(world, [a, b])
    for cid, reason in (
        (ahead, "invalid"),
        (early, "invalid"),
        (missing, "not_found"),
        (twice, "exists"),
    ):
        [rejected] = a.seen("conflict.rejected", cid)
        assert rejected["data"]["reason"] == reason, (reason, rejected)
    assert a.seen("conflict.rejected", ahead)[0]["data"]["current"]["version"] == 1
    unchanged = held(a, "timeline", "e")
    assert unchanged["version"] == 1 and unchanged["fields"]["end"] == at(11)
    assert (await wedding_state(world, b.user))["entities"]["timeline"] == {"e": unchanged}


async def test_budget_moves_over_the_threshold_wait_for_the_couple(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, p = await two_members(world, gateways)
    vendor = await world.add("vendor")
    url = f"/api/weddings/{world.wedding}/approvals"
    await acked(
        a, await a.change("budget", "b", "create", {"category": "Flowers", "estimated": 20_000})
    )
    # exactly the threshold: applies
    await acked(
        p, await p.change("budget", "b", "update", {"estimated": 20_000 + THRESHOLD}, base=1)
    )
    big = await p.change("budget", "b", "update", {"estimated": 220_001}, base=2)
    await acked(p, big)
    requested = await a.expect("approval.requested", big)
    assert requested["data"]["amounts"] == ["estimated"]
    assert requested["data"]["requested_by"] == p.user
    assert requested["data"]["fields"] == {"estimated": 220_001}
    approval = requested["data"]["approval_id"]
    await quiesce(world, [a, p])
    assert a.entity("budget", "b") == p.entity("budget", "b")
    assert held(p, "budget", "b")["version"] == 2
    assert held(p, "budget", "b")["fields"]["estimated"] == 120_000

    async with httpx.AsyncClient(base_url=world.base) as c:
        listed = (await c.get(url, headers=world.auth(p.user))).json()
        assert [(x["id"], x["status"], x["fields"]) for x in listed] == [
            (approval, "pending", {"estimated": 220_001})
        ]
        for who in (p.user, vendor):
            r = await c.post(
                f"{url}/{approval}", headers=world.auth(who), json={"decision": "grant"}
            )
            assert r.status_code == 403, (who, r.text)
        r = await c.post(
            f"{url}/{approval}", headers=world.auth(a.user), json={"decision": "grant"}
        )
        assert r.status_code == 202, r.text
        granted = await p.expect("approval.granted", approval_id=approval)
        assert granted["data"]["by"] == a.user and granted["data"]["requested_by"] == p.user
        applied = await p.expect("entity.updated", big, entity_id="b")
        assert applied["data"]["version"] == 3 and applied["data"]["fields"]["estimated"] == 220_001
        assert p.events.index(granted) < p.events.index(applied)
        again = await c.post(
            f"{url}/{approval}", headers=world.auth(a.user), json={"decision": "deny"}
        )
        assert again.status_code == 409

        bigger = await p.change(
            "budget", "b", "update", {"estimated": 900_000, "paid": True}, base=3
        )
        await acked(p, bigger)
        second = (await a.expect("approval.requested", bigger))["data"]["approval_id"]
        r = await c.post(f"{url}/{second}", headers=world.auth(a.user), json={"decision": "deny"})
        assert r.status_code == 202, r.text
        denied = await p.expect("approval.denied", approval_id=second)
        assert denied["data"]["by"] == a.user
        listed = (await c.get(url, headers=world.auth(a.user))).json()
        assert {x["id"]: x["status"] for x in listed} == {approval: "granted", second: "denied"}

        # a grant applies the held change under the usual rules: deleted meanwhile, refused
        await acked(
            a, await a.change("budget", "b2", "create", {"category": "Cake", "estimated": 1})
        )
        later = await p.change("budget", "b2", "update", {"actual": 400_000}, base=1)
        await acked(p, later)
        third = (await a.expect("approval.requested", later))["data"]["approval_id"]
        await acked(a, await a.change("budget", "b2", "delete", base=1))
        r = await c.post(f"{url}/{third}", headers=world.auth(a.user), json={"decision": "grant"})
        assert r.status_code == 202, r.text
        await p.expect("approval.granted", approval_id=third)
        refused = await p.expect("conflict.rejected", later)
        assert refused["data"]["reason"] == "deleted"

    # the couple's own big move needs nobody's approval
    own = await a.change("budget", "b", "update", {"estimated": 5_000_000}, base=3)
    await acked(a, own)
    await quiesce(world, [a, p])
    assert a.seen("approval.requested", own) == []
    assert a.seen("entity.updated", bigger) == []  # denied: never applied
    expected = {
        "version": 4,
        "fields": {
            "category": "Flowers",
            "description": None,
            "estimated": 5_000_000,
            "actual": None,
            "paid": False,
            "approved": False,
            "approved_estimated": 5_000_000,
            "approved_actual": None,
        },
    }
    assert a.entity("budget", "b") == p.entity("budget", "b") == expected
    assert (await wedding_state(world, a.user))["entities"]["budget"] == {"b": expected}


async def test_budget_approval_cannot_be_bypassed_in_steps_by_deleting_or_by_flags(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    """Issue 22, finding 6: the attacks, as a planner would make them over a socket."""
    a, p = await two_members(world, gateways)
    url = f"/api/weddings/{world.wedding}/approvals"
    venue: dict[str, Any] = {"category": "Venue", "estimated": 100_000}
    cake: dict[str, Any] = {"category": "Cake"}
    await acked(a, await a.change("budget", "venue", "create", venue))
    await acked(a, await a.change("budget", "cake", "create", {**cake, "estimated": 150_000}))
    await quiesce(world, [a, p])
    # 12 steps of the threshold each: the first fits, every later one is held
    steps = []
    for _ in range(12):
        line = held(p, "budget", "venue")
        step = {"estimated": line["fields"]["estimated"] + THRESHOLD}
        cid = await p.change("budget", "venue", "update", step, base=line["version"])
        steps.append(cid)
        await acked(p, cid)
        await p.expect("entity.updated" if len(steps) == 1 else "approval.requested", cid)
    # deleting a large line, paying it or marking it approved: held too
    gone = await p.change("budget", "cake", "delete", base=1)
    paid = await p.change("budget", "cake", "update", {"paid": True}, base=1)
    ok = await p.change("budget", "cake", "update", {"approved": True}, base=1)
    sneaky = await p.change("budget", "cake", "update", {"approved_estimated": 10**9}, base=1)
    assert (await p.ack(sneaky))["code"] == "invalid"  # the server keeps approved amounts
    await quiesce(world, [a, p])
    requested = {e["data"]["change"]["id"]: e["data"] for e in a.seen("approval.requested")}
    assert sorted(requested) == sorted([*steps[1:], gone, paid, ok])
    assert requested[gone]["op"] == "delete" and requested[gone]["amounts"] == ["estimated"]
    assert (requested[paid]["amounts"], requested[ok]["amounts"]) == (["paid"], ["approved"])
    state = (await wedding_state(world, p.user))["entities"]["budget"]
    assert state == a.state["budget"] == p.state["budget"]
    assert state["venue"]["version"] == 2
    assert state["venue"]["fields"]["estimated"] == 200_000  # one step, not 1 300 000
    assert state["venue"]["fields"]["approved_estimated"] == 100_000
    cake |= {"description": None, "estimated": 150_000, "actual": None, "paid": False}
    cake |= {"approved": False, "approved_estimated": 150_000, "approved_actual": None}
    assert state["cake"] == {"version": 1, "fields": cake}
    # the couple grants one step: from there the planner has one threshold again
    async with httpx.AsyncClient(base_url=world.base) as c:
        listed = {x["id"]: x for x in (await c.get(url, headers=world.auth(a.user))).json()}
        assert {x["status"] for x in listed.values()} == {"pending"} and len(listed) == 14
        second = requested[steps[1]]["approval_id"]
        r = await c.post(f"{url}/{second}", headers=world.auth(a.user), json={"decision": "grant"})
        assert r.status_code == 202, r.text
        granted = await p.expect("entity.updated", steps[1], entity_id="venue")
        assert granted["data"]["fields"]["estimated"] == 300_000
        assert granted["data"]["fields"]["approved_estimated"] == 300_000
        delete = requested[gone]["approval_id"]
        r = await c.post(f"{url}/{delete}", headers=world.auth(a.user), json={"decision": "grant"})
        assert r.status_code == 202, r.text
        await p.expect("entity.deleted", gone, entity_id="cake")
    fits = await p.change("budget", "venue", "update", {"estimated": 400_000}, base=3)
    await acked(p, fits)
    await p.expect("entity.updated", fits, entity_id="venue")
    await quiesce(world, [a, p])
    assert set(p.state["budget"]) == {"venue"}
    assert p.state["budget"]["venue"]["fields"]["estimated"] == 400_000


async def test_moving_an_item_cascades_to_its_dependents(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, b = await two_members(world, gateways)
    items = {
        "ceremony": (9, 10, []),
        "photos": (10, 11, ["ceremony"]),
        "lunch": (11, 12, ["photos"]),
        "toast": (12, 13, ["ceremony", "lunch"]),
        "band": (20, 23, ["encore"]),  # unknown ids are allowed: created later, maybe
    }
    for eid, (h0, h1, deps) in items.items():
        await acked(
            a,
            await a.change(
                "timeline",
                eid,
                "create",
                {"title": eid, "start": at(h0), "end": at(h1), "depends_on": deps},
            ),
        )
    move = await b.change("timeline", "ceremony", "update", {"start": at(9, 30)}, base=1)
    await acked(b, move)
    await quiesce(world, [a, b])
    for m in (a, b):
        [cascaded] = m.seen("timeline.cascaded")
        assert cascaded["data"]["entity_id"] == "ceremony"
        assert cascaded["data"]["delta_seconds"] == 1800
        assert cascaded["data"]["change"]["id"] == move
        assert sorted(cascaded["data"]["shifted"]) == ["lunch", "photos", "toast"]
        shifted = [e["data"]["entity_id"] for e in m.seen("entity.updated", cause="cascade")]
        assert sorted(shifted) == ["lunch", "photos", "toast"]  # each once, though toast
        # depends on ceremony twice over
    state = (await wedding_state(world, a.user))["entities"]["timeline"]
    assert state == a.state["timeline"] == b.state["timeline"]
    for eid, (h0, h1, _) in items.items():
        got = (state[eid]["version"], state[eid]["fields"]["start"], state[eid]["fields"]["end"])
        if eid == "band":
            assert got == (1, at(h0), at(h1))
        else:
            assert got == (2, at(h0, 30), at(h1, 30)), eid

    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/audit", headers=world.auth(a.user))
    cascades = {
        e["details"]["entity_id"]: e
        for e in r.json()["items"]
        if e["action"] == "entity_changed" and e["details"]["op"] == "cascade"
    }
    assert sorted(cascades) == ["lunch", "photos", "toast"]
    assert cascades["lunch"]["actor"] == b.user
    assert cascades["lunch"]["details"]["before"] == {"start": at(11), "end": at(12)}
    assert cascades["lunch"]["details"]["after"] == {"start": at(11, 30), "end": at(12, 30)}

    for deps in (["toast"], ["ceremony"]):  # ceremony ← … ← toast; itself
        cycle = await a.change("timeline", "ceremony", "update", {"depends_on": deps}, base=2)
        await acked(a, cycle)
        rejected = await b.expect("conflict.rejected", cycle)
        assert rejected["data"]["reason"] == "cycle"
        assert rejected["data"]["fields"] == ["depends_on"]
    await quiesce(world, [a, b])
    assert (await wedding_state(world, a.user))["entities"]["timeline"] == state


async def test_double_bookings_are_reported(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, b = await two_members(world, gateways)

    def item(h0: tuple[int, int], h1: tuple[int, int], **more: str) -> dict[str, Any]:
        return {"title": "x", "start": at(*h0), "end": at(*h1), **more}

    await acked(
        a, await a.change("timeline", "dj1", "create", item((14, 0), (15, 0), vendor_id="dj"))
    )
    await acked(
        b, await b.change("timeline", "dj2", "create", item((14, 30), (15, 30), vendor_id="dj"))
    )
    # back to back with dj2: no overlap
    await acked(
        a, await a.change("timeline", "dj3", "create", item((15, 30), (16, 0), vendor_id="dj"))
    )
    await acked(
        a, await a.change("timeline", "g1", "create", item((16, 0), (17, 0), location="garden"))
    )
    await acked(
        b, await b.change("timeline", "g2", "create", item((16, 45), (17, 30), location="garden"))
    )
    await acked(
        b, await b.change("timeline", "h1", "create", item((16, 0), (17, 0), location="hall"))
    )
    await quiesce(world, [a, b])
    for m in (a, b):
        detected = [e["data"] for e in m.seen("timeline.conflict.detected")]
        assert detected == [
            {"items": ["dj1", "dj2"], "reason": "vendor", "vendor_id": "dj"},
            {"items": ["g1", "g2"], "reason": "location", "location": "garden"},
        ]
    # moving an item into an overlap is reported too
    await acked(a, await a.change("timeline", "dj3", "update", {"start": at(15, 15)}, base=1))
    found = await b.expect("timeline.conflict.detected", items=["dj2", "dj3"])
    assert found["data"]["reason"] == "vendor"


async def test_guest_changes_on_the_wedding_day_raise_an_alert(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, f = await two_members(world, gateways, "family")
    await acked(f, await f.change("guests", "g1", "create", {"name": "Ann"}))
    await quiesce(world, [a, f])
    assert a.seen("guests.changed_on_wedding_day") == []
    await set_status(world, "wedding_day")
    await acked(f, await f.change("guests", "g1", "update", {"rsvp": "no", "meal": None}, base=1))
    await acked(f, await f.change("guests", "g2", "create", {"name": "Bob"}))
    await acked(a, await a.change("guests", "g2", "delete", base=1))
    await acked(a, await a.change("tasks", "t", "create", {"title": "not a guest"}))
    await quiesce(world, [a, f])
    for m in (a, f):
        alerts = [e["data"] for e in m.seen("guests.changed_on_wedding_day")]
        assert [(d["entity_id"], d["op"], d["by"]) for d in alerts] == [
            ("g1", "update", f.user),
            ("g2", "create", f.user),
            ("g2", "delete", a.user),
        ]
        assert alerts[0]["changed"] == ["rsvp"]  # meal was null already


async def test_the_edge_refuses_malformed_and_forbidden_changes(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    users = {role: await world.add(role) for role in ("vendor", "guest", "family")}
    a = await join_member(world, gateways[0], world.couple)
    vendor = await join_member(world, gateways[1], users["vendor"])
    guest = await join_member(world, gateways[1], users["guest"])
    await acked(a, await a.change("tasks", "t", "create", {"title": "t"}))
    invalid: list[tuple[str, str, str, dict[str, Any], int | None]] = [
        ("tasks", "t", "update", {"colour": "red"}, 1),  # unknown field
        ("tasks", "t", "update", {"done": "maybe"}, 1),  # wrong type
        ("guests", "g", "update", {"plus_ones": "two"}, 1),
        ("guests", "g", "create", {"rsvp": "yes"}, None),  # name missing
        ("timeline", "e", "create", {"title": "x", "start": at(10)}, None),  # end missing
        ("timeline", "e", "create", {"title": "x", "start": at(10), "end": at(9)}, None),
        ("timeline", "e", "create", {"title": "x", "start": "10 o'clock", "end": at(11)}, None),
        ("tasks", "t2", "create", {"title": "x"}, 1),  # base_version on create
        ("tasks", "t", "update", {"title": "x"}, None),  # no base_version on update
        ("tasks", "t", "update", {"title": None}, 1),  # a required field cleared
        ("tasks", "t", "delete", {"title": "x"}, 1),  # a delete with fields
    ]
    for kind, eid, op, fields, base in invalid:
        cid = await a.change(kind, eid, op, fields, base)
        frame = await a.ack(cid)
        got = (frame["type"], frame.get("code"), frame["id"])
        assert got == ("error", "invalid", cid), (kind, op, fields, frame)
    for m, kind, fields in (
        (vendor, "budget", {"category": "x", "estimated": 1}),
        (guest, "tasks", {"title": "x"}),
    ):
        cid = await m.change(kind, "x", "create", fields)
        frame = await m.ack(cid)
        assert (frame["type"], frame["code"], frame["id"]) == ("error", "forbidden", cid)
    # nothing refused reached the worker; what is allowed does, and only where readable
    await acked(a, await a.change("budget", "b", "create", {"category": "x", "estimated": 1}))
    await acked(
        a, await a.change("timeline", "e", "create", {"title": "x", "start": at(10), "end": at(11)})
    )
    await quiesce(world, [a])
    assert conflict_events(a) == []
    await guest.expect("entity.created", entity_id="e")
    assert [e["data"]["entity"] for e in guest.events] == ["timeline"]
    assert {k: sorted(v) for k, v in without_empty(a.state).items()} == {
        "tasks": ["t"],
        "budget": ["b"],
        "timeline": ["e"],
    }
    for role, user in (("couple", world.couple), *users.items()):
        state = (await wedding_state(world, user))["entities"]
        readable = {k.value for k in EntityKind if MATRIX[Role(role)][CHANNEL_OF[k]].read}
        assert set(state) == readable, role
    guest_state = (await wedding_state(world, users["guest"]))["entities"]
    assert set(guest_state) == {"timeline"}  # no budget, vendors, guests or tasks
    assert guest_state["timeline"] == a.state["timeline"]


async def test_the_audit_log_records_each_change_with_before_and_after(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    a, p = await two_members(world, gateways)
    await acked(a, await a.change("tasks", "t", "create", {"title": "a"}))
    await acked(p, await p.change("tasks", "t", "update", {"title": "b", "done": False}, base=1))
    await acked(a, await a.change("tasks", "t", "delete", base=2))
    await quiesce(world, [a, p])
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/audit", headers=world.auth(a.user))
    assert r.status_code == 200, r.text
    changes = [
        (e["actor"], e["details"])
        for e in reversed(r.json()["items"])
        if e["action"] == "entity_changed"
    ]
    assert [
        (actor, d["entity"], d["entity_id"], d["op"], d["version"]) for actor, d in changes
    ] == [
        (a.user, "tasks", "t", "create", 1),
        (p.user, "tasks", "t", "update", 2),
        (a.user, "tasks", "t", "delete", 3),
    ]
    created, updated, deleted = (d for _, d in changes)
    fields = {"title": "a", "assignee": None, "due": None, "done": False}
    assert created["before"] == dict.fromkeys(fields) and created["after"] == fields
    assert (updated["before"], updated["after"]) == ({"title": "a"}, {"title": "b"})
    assert (deleted["before"], deleted["after"]) == ({**fields, "title": "b"}, {})
    assert created["change_seq"] < updated["change_seq"] < deleted["change_seq"]
