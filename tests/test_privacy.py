"""GDPR: a person exports everything stored about them, then erases it; afterwards their
name, email, phone, IP and device fingerprint are nowhere in PostgreSQL, JetStream or the
archive, while the wedding's history keeps every event, in order, under their user id."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import httpx
import websockets

from app.auth.tokens import issue_token
from app.connections import Connections
from app.privacy.scan import scan
from config.settings import Settings
from tests.statekit import Member
from tests.world import World, recv, recv_type, send, worker_process
from workers.retention import ArchiveJob

NAME = "Zelda Quimby-Okafor"
EMAIL = "zelda.quimby@example.org"
PHONE = "+44 7700 900123"
IP = "127.0.0.9"
FINGERPRINT = "fp-zelda-4c1e-device"
NEEDLES = [NAME, EMAIL, PHONE, IP, FINGERPRINT]


def token_for(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(settings.auth, user, name=NAME, email=EMAIL)}


async def history(c: httpx.AsyncClient, world: World) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await c.get(f"/api/weddings/{world.wedding}/events", headers=world.auth(world.couple),
                        params={"after_seq": after, "limit": 50})
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["events"]
        if page["next_after_seq"] is None:
            return out
        after = page["next_after_seq"]


async def chat(ws: Any, text: str) -> int:
    cid = uuid.uuid4().hex[:12]
    await send(ws, type="message", id=cid, channel="chat", data={"text": text})
    while True:
        f = await recv(ws)
        if f["type"] == "ack" and f["id"] == cid:
            return int(f["seq"])
        assert f["type"] != "error", f


async def found_in_postgres(conns: Connections, needles: list[str]) -> list[str]:
    """``table: needle`` for every table row (partitions included) holding a needle."""
    hits = []
    async with conns.pool.acquire() as conn:
        tables = [r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'")]
        for table in tables:
            for needle in needles:
                n = await conn.fetchval(
                    f"SELECT count(*) FROM {table} t WHERE t::text ILIKE $1", f"%{needle}%")
                # bytea columns show as hex in t::text: search their text too
                for col in [r["attname"] for r in await conn.fetch(
                        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                        "AND atttypid = 'bytea'::regtype AND attnum > 0", table)]:
                    n += await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE "
                        f"encode({col}, 'escape') ILIKE $1", f"%{needle}%")
                if n:
                    hits.append(f"{table}: {needle}")
    return hits


async def found_in_jetstream(conns: Connections, needles: list[str]) -> list[str]:
    hits = []
    for info in await conns.js.streams_info():
        name = info.config.name
        for subject in info.config.subjects or []:
            async for m in scan(conns.js, name, subject):
                text = m.data.decode("utf-8", "replace").lower()
                hits += [f"{name} #{m.seq}: {n}" for n in needles if n.lower() in text]
    return hits


async def test_export_then_erase_leaves_nothing_personal(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    zelda = "user-" + uuid.uuid4().hex[:10]
    me = token_for(settings, zelda)
    local = httpx.AsyncHTTPTransport(local_address=IP)
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.put(f"/api/weddings/{world.wedding}/members/{zelda}",
                        headers=world.auth(world.couple),
                        json={"role": "planner", "display_name": NAME, "email": EMAIL,
                              "phone": PHONE})
        assert r.status_code == 200, r.text
        couple_session = await world.join(world.couple)
    async with httpx.AsyncClient(base_url=world.base, transport=local) as c:  # only she is .9
        r = await c.post(f"/api/collaboration/join/{world.wedding}",
                         headers={**me, "X-Device-Fingerprint": FINGERPRINT})
        assert r.status_code == 201, r.text
        session = r.json()["session_token"]

    url = world.base.replace("http", "ws") + f"/ws/weddings/{world.wedding}?token="
    zs = await websockets.connect(url + session, local_addr=(IP, 0))
    cs = await websockets.connect(url + couple_session)
    await recv_type(zs, "welcome")
    await recv_type(cs, "welcome")
    mine = [await chat(zs, f"Hi all, {NAME} here: write to {EMAIL} or call {PHONE}")]
    theirs = [await chat(cs, f"Thanks {NAME}! Welcome aboard.")]
    async with worker_process(settings, "conflicts"):
        guest = Member(cs, world.couple)
        await guest.ack(await guest.change("guests", "g-zelda", "create",
                                           {"name": NAME, "contact": EMAIL}))
        await guest.event("entity.created", entity_id="g-zelda")
    # half the history is archived before the erase, half still in JetStream
    archived_upto = dt.datetime.now(dt.UTC)
    mine.append(await chat(zs, f"Ring me at {PHONE} after six"))
    theirs.append(await chat(cs, "See you all on the day"))
    job = ArchiveJob(conns.nc, conns.js, conns.pool, settings.retention, only=[uuid.UUID(world.wedding)])
    assert (await job.wedding(uuid.UUID(world.wedding), archived_upto))[1] >= 3
    async with conns.pool.acquire() as conn:  # a notification text naming her
        await conn.execute(
            "INSERT INTO notifications (id, wedding_id, user_id, event_id, event_seq, event_type,"
            " category, title, body, created_at) VALUES ($1, $2, $3, 'e', 1, 'message', 'chat',"
            " $4, $5, now())", uuid.uuid4(), uuid.UUID(world.wedding), world.couple,
            f"{NAME} mentioned you", f"{NAME}: call {PHONE}")

    async with httpx.AsyncClient(base_url=world.base) as c:
        before = await history(c, world)
        r = await c.get("/api/me/export", headers=me)
        assert r.status_code == 200, r.text
        exported = r.json()
        assert exported["user_id"] == zelda
        [membership] = exported["memberships"]
        assert (membership["display_name"], membership["email"], membership["phone"]) == (NAME, EMAIL, PHONE)
        assert [(s["ip"], s["device_fingerprint"]) for s in exported["sessions"]] == [(IP, FINGERPRINT)]
        assert sorted(e["seq"] for e in exported["events"]) == sorted(mine)  # archived + held
        assert all(e["event"]["actor"]["user_id"] == zelda for e in exported["events"])
        assert "joined" in {a["action"] for a in exported["audit"]}
        assert await found_in_postgres(conns, NEEDLES) and await found_in_jetstream(conns, [NAME])

        r = await c.delete("/api/me", headers=me)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["pending_changes"] == 0 and report["rows_deleted"]["sessions"] == 1

        # her socket is closed, her token opens nothing any more
        try:
            while True:
                await recv(zs, timeout=5)
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code >= 4000
        r = await c.get(f"/api/weddings/{world.wedding}", headers=me)
        assert r.status_code in (403, 404)

        assert await found_in_postgres(conns, NEEDLES) == []
        assert await found_in_jetstream(conns, NEEDLES) == []

        # the history keeps every event, in order, under her user id, identifiers blanked
        after = await history(c, world)
        assert [e["seq"] for e in after] == [e["seq"] for e in before]
        by_seq = {e["seq"]: e["event"] for e in after}
        assert by_seq[mine[0]]["actor"]["user_id"] == zelda
        assert by_seq[mine[0]]["data"]["text"] == "Hi all, [erased] here: write to [erased] or call [erased]"
        assert by_seq[theirs[0]]["data"]["text"] == "Thanks [erased]! Welcome aboard."
        assert by_seq[theirs[1]] == {e["seq"]: e["event"] for e in before}[theirs[1]]
        assert json.dumps(after).count("[erased]") >= 6
    await cs.close()
