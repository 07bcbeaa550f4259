"""Presence across two gateway processes: diffs, grouping, visibility, grace, conflicts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from app.gateway.diffs import DiffBatcher, coalesce
from app.gateway.tracker import auto_status
from config.settings import PresenceSettings
from runtime.connections import Connections
from runtime.presence import Change, Kind
from streams.permissions import Role
from streams.presence import Record, Status
from tests.kits.world import World, connect, eventually, recv, recv_type, send

GRACE = 1.0


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return {"WEDSYNC_PRESENCE_GRACE": str(GRACE)}


def connection_ids(users: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {u["user_id"]: [c["connection_id"] for c in u["connections"]] for u in users}


async def diff_about(ws: ClientConnection, user: str, timeout: float = 5) -> dict[str, Any]:
    """The next presence_diff mentioning ``user`` (in joins, leaves or updates)."""
    async with asyncio.timeout(timeout):
        while True:
            f = await recv_type(ws, "presence_diff", timeout)
            if any(u["user_id"] == user for k in ("joins", "leaves", "updates") for u in f[k]):
                return f


async def no_join_or_leave_of(ws: ClientConnection, user: str, within: float) -> None:
    """Nothing but updates about ``user`` arrives for ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            f = await recv(ws, left)
        except TimeoutError:
            return
        if f["type"] == "presence_diff":
            assert user not in connection_ids(f["joins"]), f
            assert user not in connection_ids(f["leaves"]), f


async def test_join_update_and_leave_reach_the_other_process(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    try:
        welcome = await recv(a)
        assert list(connection_ids(welcome["presence"])) == [world.couple]
        b = await connect(gateways[1], world.wedding, await world.join(planner))
        b_welcome = await recv(b)
        assert set(connection_ids(b_welcome["presence"])) == {world.couple, planner}
        joined = await diff_about(a, planner)
        assert connection_ids(joined["joins"]) == {planner: [b_welcome["session_id"]]}
        await send(b, type="presence", status="busy", location="/timeline")
        update = await diff_about(a, planner)
        (conn,) = update["updates"][0]["connections"]
        assert conn["status"] == "busy" and conn["location"] == "/timeline"
        await b.close()
        closed_at = time.monotonic()
        left = await diff_about(a, planner, timeout=GRACE + 5)
        assert connection_ids(left["leaves"]) == {planner: [b_welcome["session_id"]]}
        assert time.monotonic() - closed_at >= GRACE * 0.8  # only after the grace
    finally:
        await a.close()


async def test_a_process_holds_only_the_presence_of_its_rooms(
    world: World, gateways: list[str]
) -> None:
    """Scoped presence: a gateway process keeps (and applies) only the records of weddings
    it has sockets in; asked about another wedding over HTTP, it reads the bucket."""
    other = World(world.settings, gateways[1])
    await other.create()
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b = await connect(gateways[1], other.wedding, await other.join(other.couple))
    try:
        await recv(a)
        await recv(b)

        async def held() -> list[float] | None:
            async with httpx.AsyncClient(base_url=gateways[0]) as c:
                scraper = {"Authorization": f"Bearer {world.settings.auth.metrics_token}"}
                r = await c.get("/metrics", headers=scraper)
            fams = {f.name: f for f in text_string_to_metric_families(r.text)}
            family = fams.get("wedsync_presence_entries")
            values = sorted(s.value for s in family.samples) if family else []
            return values if values == [1.0, 1.0] else None  # one per process, not two each

        await eventually(held, timeout=15)
        async with httpx.AsyncClient(base_url=gateways[1]) as c:  # no room of it there
            r = await c.get(
                f"/api/weddings/{world.wedding}/presence", headers=world.auth(world.couple)
            )
        assert r.status_code == 200, r.text
        assert list(connection_ids(r.json()["users"])) == [world.couple]
    finally:
        await a.close()
        await b.close()


async def test_reconnect_within_the_grace_neither_leaves_nor_joins(
    world: World, gateways: list[str]
) -> None:
    family = await world.add("family")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    try:
        await recv(a)
        token = await world.join(family)
        b = await connect(gateways[1], world.wedding, token)
        await recv(b)
        await diff_about(a, family)  # the join
        await b.close()
        b = await connect(gateways[0], world.wedding, token)  # back, on the other process
        await recv(b)
        await no_join_or_leave_of(a, family, within=GRACE + 1.0)
        await b.close()
        assert (await diff_about(a, family, timeout=GRACE + 5))["leaves"]
    finally:
        await a.close()


async def test_devices_of_one_user_are_grouped(world: World, gateways: list[str]) -> None:
    phone = await connect(gateways[0], world.wedding, await world.join(world.couple))
    laptop = await connect(gateways[1], world.wedding, await world.join(world.couple))
    try:
        ids = {(await recv(phone))["session_id"], (await recv(laptop))["session_id"]}
        async with httpx.AsyncClient(base_url=gateways[0]) as c:
            async with asyncio.timeout(5):
                while True:  # the second device's record reaches this process's mirror
                    r = await c.get(
                        f"/api/weddings/{world.wedding}/presence", headers=world.auth(world.couple)
                    )
                    assert r.status_code == 200, r.text
                    users = connection_ids(r.json()["users"])
                    if len(users.get(world.couple, [])) == 2:
                        break
                    await asyncio.sleep(0.02)
        assert list(users) == [world.couple] and set(users[world.couple]) == ids
    finally:
        await phone.close()
        await laptop.close()


async def test_guests_and_vendors_do_not_see_each_other(world: World, gateways: list[str]) -> None:
    guest, vendor = await world.add("guest"), await world.add("vendor")
    v = await connect(gateways[0], world.wedding, await world.join(vendor))
    try:
        await recv(v)
        g = await connect(gateways[1], world.wedding, await world.join(guest))
        try:
            assert vendor not in connection_ids((await recv(g))["presence"])
            a = await connect(gateways[0], world.wedding, await world.join(world.couple))
            await recv(a)
            # the vendor hears of the couple, but was never told of the guest
            diff = await diff_about(v, world.couple)
            assert guest not in connection_ids(diff["joins"])
            await a.close()
            async with httpx.AsyncClient(base_url=gateways[1]) as c:
                r = await c.get(
                    f"/api/weddings/{world.wedding}/presence", headers=world.auth(guest)
                )
            assert vendor not in connection_ids(r.json()["users"])
        finally:
            await g.close()
    finally:
        await v.close()


async def test_two_people_editing_one_field_both_get_a_hint(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b = await connect(gateways[1], world.wedding, await world.join(planner))
    try:
        await recv(a)
        await recv(b)
        field = {"entity": "timeline", "entity_id": "ceremony", "field": "start"}
        await send(a, type="presence", editing=field)
        await send(b, type="presence", editing={**field, "field": "end"})  # another field
        await send(b, type="presence", editing=field)
        to_b = await recv_type(b, "editing_conflict")
        to_a = await recv_type(a, "editing_conflict")
        assert to_b["editing"] == to_a["editing"] == field
        assert [p["user_id"] for p in to_b["peers"]] == [world.couple]
        assert [p["user_id"] for p in to_a["peers"]] == [planner]
    finally:
        await a.close()
        await b.close()


async def test_joins_and_leaves_are_durable_events(
    world: World, gateways: list[str], conns: Connections
) -> None:
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    session = (await recv(a))["session_id"]
    await a.close()
    sub = await conns.js.subscribe(f"wedsync.presence.{world.wedding}.*", ordered_consumer=True)
    try:
        kinds: list[str] = []
        async with asyncio.timeout(GRACE + 5):
            while len(kinds) < 2:
                try:
                    msg = await sub.next_msg(timeout=GRACE + 5)
                except NatsTimeoutError:
                    break
                event = msgspec.json.decode(msg.data)
                assert event["connection_id"] == session and event["user_id"] == world.couple
                kinds.append(event["type"])
                if event["type"] == "presence.left":
                    assert event["last_seen"] <= time.time()
    finally:
        await sub.unsubscribe()
    assert kinds == ["presence.joined", "presence.left"]


# -- rules without servers ---------------------------------------------------------------


def test_status_follows_inactivity_with_an_injected_clock() -> None:
    s = PresenceSettings(idle_after=120, away_after=600)
    assert [auto_status(t, s) for t in (0, 119.9, 120, 599, 600, 10_000)] == [
        Status.ACTIVE,
        Status.ACTIVE,
        Status.IDLE,
        Status.IDLE,
        Status.AWAY,
        Status.AWAY,
    ]


def _record(**kw: Any) -> Record:
    base = {
        "wedding_id": "w",
        "user_id": "u",
        "display_name": None,
        "role": Role.GUEST,
        "connection_id": "c",
        "status": Status.ACTIVE,
        "location": None,
        "editing": None,
        "connected_at": 1.0,
        "last_active_at": 1.0,
        "auto": True,
        "gateway": "g",
        "owner": "s",
    }
    return Record(**{**base, **kw})


def test_coalescing_within_a_batch() -> None:
    r1, r2 = _record(), _record(location="/budget")
    join, leave = Change(Kind.JOIN, r1), Change(Kind.LEAVE, r1)
    update = Change(Kind.UPDATE, r2, r1)
    assert coalesce(join, leave) is None  # came and went: nothing to show
    assert coalesce(join, update) == Change(Kind.JOIN, r2)
    assert coalesce(leave, Change(Kind.JOIN, r1)) is None  # a quick reconnect: no flap
    assert coalesce(leave, Change(Kind.JOIN, r2)) == Change(Kind.UPDATE, r2, r1)
    assert coalesce(update, leave) == Change(Kind.LEAVE, r1)


async def test_a_busy_room_is_batched_but_a_quiet_one_is_not() -> None:
    delivered: list[tuple[float, list[str]]] = []
    loop = asyncio.get_running_loop()
    got = asyncio.Event()

    def deliver(changes: list[Change]) -> None:
        delivered.append((loop.time(), [c.record.connection_id for c in changes]))
        got.set()

    batcher = DiffBatcher(0.2, deliver, burst=2)
    start = loop.time()
    for i in range(6):  # a storm: 2 go out at once, the other 4 together after the window
        batcher.add(Change(Kind.JOIN, _record(connection_id=f"c{i}")))
    assert [ids for _, ids in delivered] == [["c0"], ["c1"]]
    got.clear()
    await asyncio.wait_for(got.wait(), 2)
    when, ids = delivered[-1]
    assert ids == ["c2", "c3", "c4", "c5"] and when - start >= 0.19
