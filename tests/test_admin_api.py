"""The server API for operators and backends (`/api/admin`) against two real gateway
processes on the session's NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from nats.js.api import AckPolicy, ConsumerConfig
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import EVENTS
from streams.subjects import wedding_wildcard
from tests.kits.world import World, connect, eventually, recv, recv_type

pytestmark = pytest.mark.asyncio


async def admin_token_cli(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        "admin-token",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return out.decode().strip()


async def test_admin_token_is_generated_once_in_dev_and_printed(tmp_path: Path) -> None:
    env = {"WEDSYNC_DATA_DIR": str(tmp_path), "WEDSYNC_ADMIN_TOKEN": ""}
    first = await admin_token_cli(env, "--new-secret")  # refused without (test_dev_cli.py)
    assert len(first) >= 40 and first == await admin_token_cli(env)  # stable across runs
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert stored["admin_token"] == first
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    configured = await admin_token_cli({**env, "WEDSYNC_ADMIN_TOKEN": "from-the-environment"})
    assert configured == "from-the-environment"


def admin(settings: Settings) -> dict[str, str]:
    assert settings.auth.admin_token, "the test settings configure WEDSYNC_ADMIN_TOKEN"
    return {"Authorization": f"Bearer {settings.auth.admin_token}"}


async def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server ends the socket: the code it sent (None: no close frame)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await recv(ws, timeout)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def publish(base: str, settings: Settings, wedding: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as c:
        return await c.post(
            f"/api/admin/weddings/{wedding}/events", json=body, headers=admin(settings)
        )


async def get(base: str, settings: Settings, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get(path, params=params, headers=admin(settings))
    assert r.status_code == 200, r.text
    return r.json()


ROUTES = [
    (
        "POST",
        "/api/admin/weddings/{w}/events",
        {"channel": "chat", "type": "announcement", "data": {"text": "forged"}},
    ),
    ("GET", "/api/admin/weddings/{w}/presence", None),
    ("GET", "/api/admin/weddings/{w}/events", None),
    ("POST", "/api/admin/weddings/{w}/users/{u}/disconnect", {"end_sessions": True}),
    ("GET", "/api/admin/rooms", None),
    ("GET", "/api/admin/stats", None),
]


async def test_every_route_refuses_without_the_admin_token(
    world: World, gateways: list[str], settings: Settings
) -> None:
    token = await world.join(world.couple)
    ws = await connect(gateways[1], world.wedding, token)
    try:
        assert (await recv(ws))["type"] == "welcome"
        refusals = {
            "no header": {},
            "user JWT": world.auth(world.couple),
            "wrong token": {"Authorization": "Bearer " + "x" * 43},
            "token with another scheme": {"Authorization": f"Basic {settings.auth.admin_token}"},
            "token prefix": {"Authorization": f"Bearer {settings.auth.admin_token}"[:-1]},
        }
        async with httpx.AsyncClient(base_url=gateways[0]) as c:
            for method, path, body in ROUTES:
                url = path.format(w=world.wedding, u=world.couple)
                for why, headers in refusals.items():
                    r = await c.request(method, url, json=body, headers=headers)
                    assert r.status_code == 401, (method, url, why, r.text)
                    assert r.json()["code"] == "unauthorized", (method, url, why)
        # nothing happened: no event stored, the couple's session and socket live on
        page = await get(gateways[1], settings, f"/api/admin/weddings/{world.wedding}/events")
        assert page["events"] == [] and page["last_seq"] == 0
        await ws.send('{"type": "ping"}')
        assert (await recv_type(ws, "pong"))["type"] == "pong"
    finally:
        await ws.close()


async def test_server_event_reaches_members_live_and_is_in_history(
    world: World, gateways: list[str], settings: Settings
) -> None:
    vendor = await world.add("vendor")
    a = await connect(gateways[0], world.wedding, await world.join(world.couple))
    b = await connect(gateways[1], world.wedding, await world.join(vendor))
    try:
        await recv(a)
        await recv(b)
        r = await publish(
            gateways[1],
            settings,
            world.wedding,
            channel="chat",
            type="announcement",
            data={"text": "doors open at 3"},
        )
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["seq"] > 0 and out["duplicate"] is False
        for ws in (a, b):  # on both processes, live
            got = await recv_type(ws, "event")
            assert got["seq"] == out["seq"]
            ev = got["event"]
            assert ev["id"] == out["id"] and ev["type"] == "announcement"
            assert ev["channel"] == "chat" and ev["data"] == {"text": "doors open at 3"}
            assert ev["actor"] == {"user_id": "server", "role": "planner", "server": True}
        # a retry with the same idempotency key is stored once
        first = await publish(
            gateways[0],
            settings,
            world.wedding,
            channel="timeline",
            type="vendor.arrived",
            data={"vendor": "flowers"},
            id="k1",
        )
        again = await publish(
            gateways[1],
            settings,
            world.wedding,
            channel="timeline",
            type="vendor.arrived",
            data={"vendor": "flowers"},
            id="k1",
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == {**first.json(), "duplicate": True}
        # the vendor may not read the budget: a server budget event reaches only the couple
        budget = await publish(
            gateways[0],
            settings,
            world.wedding,
            channel="budget",
            type="payment.received",
            data={"amount": 100},
        )
        assert budget.status_code == 201
        seqs = [first.json()["seq"], budget.json()["seq"]]
        assert [(await recv_type(a, "event"))["seq"] for _ in seqs] == seqs
        assert (await recv_type(b, "event"))["seq"] == first.json()["seq"]
    finally:
        await a.close()
        await b.close()
    # history: the admin sees every channel, a member what their role may read
    path = f"/api/admin/weddings/{world.wedding}/events"
    page = await get(gateways[0], settings, path, after_seq=0, limit=2)
    assert [e["seq"] for e in page["events"]] == [out["seq"], seqs[0]]
    assert page["next_after_seq"] == seqs[0] and page["last_seq"] == seqs[1]
    assert page["events"][0]["event"]["actor"]["server"] is True
    rest = await get(gateways[0], settings, path, after_seq=page["next_after_seq"])
    assert [e["seq"] for e in rest["events"]] == [seqs[1]] and rest["next_after_seq"] is None
    async with httpx.AsyncClient(base_url=gateways[1]) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/events", headers=world.auth(vendor))
    assert [e["seq"] for e in r.json()["events"]] == [out["seq"], seqs[0]]


async def test_server_event_refusals(world: World, gateways: list[str], settings: Settings) -> None:
    w = world.wedding
    reserved = await publish(
        gateways[0], settings, w, channel="tasks", type="entity.updated", data={"entity": "tasks"}
    )
    assert reserved.status_code == 422 and reserved.json()["code"] == "invalid"
    bad = await publish(gateways[0], settings, w, channel="nope", type="x")
    assert bad.status_code == 422 and bad.json()["code"] == "invalid"
    bad_type = await publish(gateways[0], settings, w, channel="chat", type="Has Spaces")
    assert bad_type.status_code == 422
    unknown = await publish(gateways[0], settings, str(uuid.uuid4()), channel="chat", type="x")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    page = await get(gateways[0], settings, f"/api/admin/weddings/{w}/events")
    assert page["events"] == []


async def test_presence_lists_every_member_unfiltered_by_role(
    world: World, gateways: list[str], settings: Settings
) -> None:
    guest, vendor = await world.add("guest"), await world.add("vendor")
    g = await connect(gateways[0], world.wedding, await world.join(guest))
    v = await connect(gateways[1], world.wedding, await world.join(vendor))
    try:
        await recv(g)
        await recv(v)
        path = f"/api/admin/weddings/{world.wedding}/presence"

        async def both() -> list[dict[str, Any]] | None:
            records: list[dict[str, Any]] = (await get(gateways[0], settings, path))["connections"]
            return records if {r["user_id"] for r in records} == {guest, vendor} else None

        records = await eventually(both)
        assert {r["user_id"]: r["role"] for r in records} == {guest: "guest", vendor: "vendor"}
        assert len({r["gateway"] for r in records}) == 2  # one socket on each process
        # a guest is not shown vendors (docs/presence.md); the admin view shows everyone
        async with httpx.AsyncClient(base_url=gateways[0]) as c:
            r = await c.get(f"/api/weddings/{world.wedding}/presence", headers=world.auth(guest))
        assert vendor not in {u["user_id"] for u in r.json()["users"]}
    finally:
        await g.close()
        await v.close()


async def test_rooms_count_connections_of_every_process(
    world: World, gateways: list[str], settings: Settings
) -> None:
    vendor = await world.add("vendor")
    sockets = [
        await connect(gateways[0], world.wedding, await world.join(world.couple)),
        await connect(gateways[1], world.wedding, await world.join(world.couple)),
        await connect(gateways[1], world.wedding, await world.join(vendor)),
    ]
    try:
        for ws in sockets:
            await recv(ws)

        async def room() -> dict[str, Any] | None:
            rooms = await get(gateways[0], settings, "/api/admin/rooms")
            found = [r for r in rooms["rooms"] if r["wedding_id"] == world.wedding]
            return found[0] if found and found[0]["connections"] == 3 else None

        mine = await eventually(room)
        assert mine["users"] == 2
        assert sorted(mine["gateways"].values()) == [1, 2]  # one on process 0, two on 1
        listing = await get(gateways[1], settings, "/api/admin/rooms")
        assert listing["gateways"] >= 2
        assert listing["connections"] == sum(r["connections"] for r in listing["rooms"])
    finally:
        for ws in sockets:
            await ws.close()

    async def gone() -> bool:
        rooms = (await get(gateways[0], settings, "/api/admin/rooms"))["rooms"]
        return all(r["connections"] == 0 for r in rooms if r["wedding_id"] == world.wedding)

    await eventually(gone)


async def disconnect(
    base: str, settings: Settings, world: World, user: str, body: dict[str, Any] | None
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post(
            f"/api/admin/weddings/{world.wedding}/users/{user}/disconnect",
            headers=admin(settings),
            json=body,
        )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_disconnect_closes_the_users_sockets_on_every_process(
    world: World, gateways: list[str], settings: Settings
) -> None:
    vendor = await world.add("vendor")
    tokens = [await world.join(vendor), await world.join(vendor)]
    couple = await connect(gateways[0], world.wedding, await world.join(world.couple))
    await recv(couple)
    try:
        # no body: 4505 on both processes, the session still works (no automatic reconnect)
        vs = [await connect(gateways[i], world.wedding, tokens[i]) for i in (0, 1)]
        for ws in vs:
            await recv(ws)
        out = await disconnect(gateways[0], settings, world, vendor, None)
        assert out["close_code"] == 4505 and out["sessions_ended"] == []
        assert [await close_code(ws) for ws in vs] == [4505, 4505]
        # reconnect=True: 4005 (reconnect and resume); the reason is passed on
        vs = [await connect(gateways[i], world.wedding, tokens[i]) for i in (0, 1)]
        for ws in vs:
            assert (await recv(ws))["type"] == "welcome"
        out = await disconnect(
            gateways[1], settings, world, vendor, {"reconnect": True, "reason": "moving you"}
        )
        assert out["close_code"] == 4005
        for ws in vs:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await recv(ws)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4005, "moving you")
        # end_sessions: 4504, and the sessions no longer open a socket nor list
        vs = [await connect(gateways[i], world.wedding, tokens[i]) for i in (0, 1)]
        for ws in vs:
            assert (await recv(ws))["type"] == "welcome"
        out = await disconnect(gateways[1], settings, world, vendor, {"end_sessions": True})
        assert out["close_code"] == 4504 and len(out["sessions_ended"]) == 2
        assert [await close_code(ws) for ws in vs] == [4504, 4504]
        for i in (0, 1):
            assert await close_code(await connect(gateways[i], world.wedding, tokens[i])) == 4500
        async with httpx.AsyncClient(base_url=gateways[0]) as c:
            r = await c.get(f"/api/collaboration/join/{world.wedding}", headers=world.auth(vendor))
            assert r.status_code == 404
            audit = await c.get(
                f"/api/weddings/{world.wedding}/audit", headers=world.auth(world.couple)
            )
        kicks = [e for e in audit.json()["items"] if e["action"] == "admin_disconnect"]
        assert [e["details"]["close_code"] for e in kicks] == [4504, 4005, 4505]
        # the couple was never touched
        await couple.send('{"type": "ping"}')
        assert (await recv_type(couple, "pong"))["type"] == "pong"
    finally:
        await couple.close()


async def test_stats_summarise_the_system(
    world: World, gateways: list[str], settings: Settings, conns: Connections
) -> None:
    durable = "admin-test-" + uuid.uuid4().hex[:8]
    await conns.js.add_consumer(
        EVENTS.name,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=wedding_wildcard(world.wedding),
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )
    ws = await connect(gateways[1], world.wedding, await world.join(world.couple))
    try:
        await recv(ws)
        seqs = []
        for i in range(3):
            r = await publish(
                gateways[0],
                settings,
                world.wedding,
                channel="chat",
                type="announcement",
                data={"i": i},
            )
            seqs.append(r.json()["seq"])

        async def connected() -> dict[str, Any] | None:
            s: dict[str, Any] = await get(gateways[0], settings, "/api/admin/stats")
            return s if s["connections"]["total"] >= 1 else None

        stats = await eventually(connected)
        c = stats["connections"]
        assert c["rooms"] >= 1 and c["gateways"] >= 2 and c["total"] >= c["rooms"]
        events = {s["name"]: s for s in stats["streams"]}[EVENTS.name]
        assert events["messages"] >= 3 and events["last_seq"] >= seqs[-1]
        assert events["first_seq"] <= seqs[0] and events["bytes"] > 0
        assert events["consumers"] >= 2  # ours and the room's subscription on process 1
        lag = {x["name"]: x for x in stats["consumers"]}[durable]
        assert lag["stream"] == EVENTS.name
        assert (lag["pending"], lag["ack_pending"], lag["delivered_seq"]) == (3, 0, 0)
        assert stats["weddings"]["planning"] >= 1 and stats["active_sessions"] >= 1
        assert set(stats["outbox"]) == {"pending", "sending", "failed", "dead"}
        assert all(n >= 0 for n in stats["outbox"].values())
        assert stats["database"]["pool_size"] >= 1
    finally:
        await ws.close()
        await conns.js.delete_consumer(EVENTS.name, durable)
