"""GDPR: a person exports everything stored about them, then erases it; afterwards their
name, email, phone, IP and device fingerprint are nowhere in PostgreSQL, JetStream or the
archive, while the wedding's history keeps every event, in order, under their user id.
An erase touches only what is theirs: never another tenant's rows, never free text matched
by what the caller chose (issue 22, finding 1); state it changes arrives as events."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import websockets

from app.admin.routes import AUDIT_ACTOR
from app.auth.tokens import issue_token
from app.privacy.scan import scan
from config.settings import Settings
from runtime.connections import Connections
from streams.protocol import RESERVED_USER_IDS, SERVER_ACTOR, SYSTEM_ACTOR
from tests.kits.statekit import Member, join_member, quiesce, without_empty
from tests.kits.world import World, recv, recv_type, send, worker_process
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
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(world.couple),
            params={"after_seq": after, "limit": 50},
        )
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
        tables = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        ]
        for table in tables:
            for needle in needles:
                n = await conn.fetchval(
                    f"SELECT count(*) FROM {table} t WHERE t::text ILIKE $1", f"%{needle}%"
                )
                # bytea columns show as hex in t::text: search their text too
                for col in [
                    r["attname"]
                    for r in await conn.fetch(
                        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                        "AND atttypid = 'bytea'::regtype AND attnum > 0",
                        table,
                    )
                ]:
                    n += await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE encode({col}, 'escape') ILIKE $1",
                        f"%{needle}%",
                    )
                if n:
                    hits.append(f"{table}: {needle}")
    return hits


async def found_in_jetstream(conns: Connections, needles: list[str]) -> list[str]:
    hits = []
    for info in await conns.js.streams_info():
        name = info.config.name
        assert name is not None  # the server names every stream it lists
        for subject in info.config.subjects or []:
            async for m in scan(conns.js, name, subject):
                text = m.data.decode("utf-8", "replace").lower()
                hits += [f"{name} #{m.seq}: {n}" for n in needles if n.lower() in text]
    return hits


async def state_of(c: httpx.AsyncClient, world: World, user: str) -> dict[str, Any]:
    r = await c.get(f"/api/weddings/{world.wedding}/state", headers=world.auth(user))
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def test_export_then_erase_leaves_nothing_personal(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    zelda = "user-" + uuid.uuid4().hex[:10]
    me = token_for(settings, zelda)
    local = httpx.AsyncHTTPTransport(local_address=IP)
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.put(
            f"/api/weddings/{world.wedding}/members/{zelda}",
            headers=world.auth(world.couple),
            json={"role": "planner", "display_name": NAME, "email": EMAIL, "phone": PHONE},
        )
        assert r.status_code == 200, r.text
        couple_session = await world.join(world.couple)
    async with httpx.AsyncClient(base_url=world.base, transport=local) as c:  # only she is .9
        r = await c.post(
            f"/api/collaboration/join/{world.wedding}",
            headers={**me, "X-Device-Fingerprint": FINGERPRINT},
        )
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
        couple = Member(cs, world.couple)
        # the couple's guest list: their record, with her address (sealed at rest)
        await couple.ack(
            await couple.change(
                "guests",
                "g-plus-one",
                "create",
                {"name": "Plus-one of the planner", "contact": EMAIL},
            )
        )
        await couple.event("entity.created", entity_id="g-plus-one")
    # half the history is archived before the erase, half still in JetStream
    archived_upto = dt.datetime.now(dt.UTC)
    mine.append(await chat(zs, f"Ring me at {PHONE} after six"))
    theirs.append(await chat(cs, "See you all on the day, Zelda"))
    theirs.append(await chat(cs, "Stay well"))
    job = ArchiveJob(
        conns.nc, conns.js, conns.pool, settings.retention, only=[uuid.UUID(world.wedding)]
    )
    assert (await job.wedding(uuid.UUID(world.wedding), archived_upto))[1] >= 3
    async with conns.pool.acquire() as conn:  # a notification text naming her
        await conn.execute(
            "INSERT INTO notifications (id, wedding_id, user_id, event_id, event_seq, event_type,"
            " category, title, body, created_at) VALUES ($1, $2, $3, 'e', 1, 'message', 'chat',"
            " $4, $5, now())",
            uuid.uuid4(),
            uuid.UUID(world.wedding),
            world.couple,
            f"{NAME} mentioned you",
            f"{NAME}: call {PHONE}",
        )

    async with httpx.AsyncClient(base_url=world.base) as c:
        before = await history(c, world)
        r = await c.get("/api/me/export", headers=me)
        assert r.status_code == 200, r.text
        exported = r.json()
        assert exported["user_id"] == zelda
        [membership] = exported["memberships"]
        assert (membership["display_name"], membership["email"], membership["phone"]) == (
            NAME,
            EMAIL,
            PHONE,
        )
        assert [(s["ip"], s["device_fingerprint"]) for s in exported["sessions"]] == [
            (IP, FINGERPRINT)
        ]
        assert sorted(e["seq"] for e in exported["events"]) == sorted(mine)  # archived + held
        assert all(e["event"]["actor"]["user_id"] == zelda for e in exported["events"])
        assert "joined" in {a["action"] for a in exported["audit"]}
        assert await found_in_postgres(conns, NEEDLES) and await found_in_jetstream(conns, [NAME])
        guest_before = (await state_of(c, world, world.couple))["entities"]["guests"]["g-plus-one"]

        r = await c.delete("/api/me", headers=me)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["pending_changes"] == 0 and report["rows_deleted"]["sessions"] == 1
        assert report["weddings"] == [world.wedding]

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

        # the history keeps every event, in order, under her user id: her messages have
        # lost their content, the others' mentions of her (full name, first name) are blank
        after = await history(c, world)
        assert [e["seq"] for e in after] == [e["seq"] for e in before]
        by_seq = {e["seq"]: e["event"] for e in after}
        for seq in mine:
            assert by_seq[seq]["actor"]["user_id"] == zelda
            assert by_seq[seq]["data"] == {"erased": True}
        assert by_seq[theirs[0]]["data"]["text"] == "Thanks [erased]! Welcome aboard."
        assert by_seq[theirs[1]]["data"]["text"] == "See you all on the day, [erased]"
        assert by_seq[theirs[2]] == {e["seq"]: e["event"] for e in before}[theirs[2]]
        # the couple's guest list is theirs: untouched, its contact still served to them
        guest_after = (await state_of(c, world, world.couple))["entities"]["guests"]["g-plus-one"]
        assert guest_after == guest_before and guest_after["fields"]["contact"] == EMAIL
    await cs.close()


async def test_erase_cannot_reach_another_tenant(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """The attack of finding 1: a user of their own wedding, named "Theo" in their token,
    joining with fingerprint "band", erases; another wedding's guest "Theo's husband Bob",
    its name, its chat and its audit log stay exactly as they were."""
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.patch(
            f"/api/weddings/{world.wedding}",
            headers=world.auth(world.couple),
            json={"name": "Theo & the band"},
        )
        assert r.status_code == 200, r.text
        cs = await websockets.connect(
            world.base.replace("http", "ws")
            + f"/ws/weddings/{world.wedding}?token="
            + await world.join(world.couple)
        )
        await recv_type(cs, "welcome")
        seq = await chat(cs, "Theo and the band arrive at six; theo@band.example knows")
        async with worker_process(settings, "conflicts"):
            couple = Member(cs, world.couple)
            await couple.ack(
                await couple.change(
                    "guests",
                    "g-bob",
                    "create",
                    {"name": "Theo's husband Bob", "contact": "theo@band.example"},
                )
            )
            await couple.event("entity.created", entity_id="g-bob")
        victim_state = await state_of(c, world, world.couple)
        victim_history = await history(c, world)
        r = await c.get(f"/api/weddings/{world.wedding}/audit", headers=world.auth(world.couple))
        victim_audit = r.json()

        theo = "user-" + uuid.uuid4().hex[:10]
        token = {
            "Authorization": "Bearer "
            + issue_token(settings.auth, theo, name="Theo", email="theo@band.example")
        }
        r = await c.post(
            "/api/weddings",
            headers=token,
            json={"name": "Theo's own", "date": "2027-01-01", "timezone": "UTC"},
        )
        assert r.status_code == 201, r.text
        own = r.json()["id"]
        r = await c.post(
            f"/api/collaboration/join/{own}", headers={**token, "X-Device-Fingerprint": "band"}
        )
        assert r.status_code == 201, r.text
        r = await c.delete("/api/me", headers=token)
        assert r.status_code == 200, r.text
        assert r.json()["weddings"] == [own], "only the wedding he belonged to"

        assert await state_of(c, world, world.couple) == victim_state
        guest = victim_state["entities"]["guests"]["g-bob"]["fields"]
        assert (guest["name"], guest["contact"]) == ("Theo's husband Bob", "theo@band.example")
        assert await history(c, world) == victim_history
        assert {e["seq"]: e for e in victim_history}[seq]["event"]["data"]["text"] == (
            "Theo and the band arrive at six; theo@band.example knows"
        )
        r = await c.get(f"/api/weddings/{world.wedding}", headers=world.auth(world.couple))
        assert r.json()["name"] == "Theo & the band"
        r = await c.get(f"/api/weddings/{world.wedding}/audit", headers=world.auth(world.couple))
        assert r.json() == victim_audit
    await cs.close()


async def test_erase_changes_state_through_events_every_client_folds(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """A task assigned to her and the vendor record linked to her account are cleared by
    changes of the system actor: a connected client folds the ``entity.updated`` events
    and ends up where ``/state`` is (no row rewritten behind its back)."""
    vendor = "user-" + uuid.uuid4().hex[:10]
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.put(
            f"/api/weddings/{world.wedding}/members/{vendor}",
            headers=world.auth(world.couple),
            json={"role": "vendor", "display_name": "Vera Florist"},
        )
        assert r.status_code == 200, r.text
        async with worker_process(settings, "conflicts"):
            couple = await join_member(world, gateways[1], world.couple)
            await couple.ack(
                await couple.change(
                    "tasks", "t-flowers", "create", {"title": "Flowers", "assignee": vendor}
                )
            )
            await couple.ack(
                await couple.change(
                    "vendors",
                    "v-vera",
                    "create",
                    {"name": "Vera's Flowers", "category": "florist", "member": vendor},
                )
            )
            await couple.ack(
                await couple.change(
                    "tasks", "t-cake", "create", {"title": "Cake", "assignee": world.couple}
                )
            )
            await couple.event("entity.created", entity_id="t-cake")

            r = await c.delete("/api/me", headers=world.auth(vendor))
            assert r.status_code == 200, r.text
            assert r.json()["changes_queued"] == 2
            task = await couple.event("entity.updated", entity_id="t-flowers")
            record = await couple.event("entity.updated", entity_id="v-vera")
            await quiesce(world, [couple])
        assert task["actor"]["user_id"] == "system" and record["actor"]["user_id"] == "system"
        assert couple.state["tasks"]["t-flowers"]["fields"]["assignee"] is None
        assert couple.state["vendors"]["v-vera"]["fields"]["member"] is None
        assert couple.state["tasks"]["t-cake"]["fields"]["assignee"] == world.couple
        served = (await state_of(c, world, world.couple))["entities"]
        assert without_empty(couple.state) == without_empty(
            {
                k: {i: {"version": e["version"], "fields": e["fields"]} for i, e in v.items()}
                for k, v in served.items()
            }
        )
    await couple.ws.close()


async def test_guest_contacts_are_sealed_at_rest_and_served_to_readers(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """Finding 14: a guest's contact never reaches PostgreSQL or JetStream in the clear,
    while the members who may read the guest list get it in /state, history, live and
    resumed event frames; a vendor (no guest list) sees no guest event at all."""
    contact = f"guest-{uuid.uuid4().hex[:8]}@example.net"
    family = await world.add("family")
    async with worker_process(settings, "conflicts"):
        couple = await join_member(world, gateways[0], world.couple)
        other = await join_member(world, gateways[1], family)  # live, on the other process
        await couple.ack(
            await couple.change("guests", "g-1", "create", {"name": "Aunt May", "contact": contact})
        )
        created = await other.event("entity.created", entity_id="g-1")
        await couple.ack(
            await couple.change("guests", "g-1", "update", {"contact": "+44 20 7946 0000"}, base=1)
        )
        await other.event("entity.updated", entity_id="g-1")
    assert created["data"]["fields"]["contact"] == contact
    assert await found_in_postgres(conns, [contact]) == []
    assert await found_in_jetstream(conns, [contact]) == []
    async with conns.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT fields->>'contact' FROM entities WHERE wedding_id = $1 AND entity_id = 'g-1'",
            uuid.UUID(world.wedding),
        )
    assert stored.startswith("enc1:")
    async with httpx.AsyncClient(base_url=world.base) as c:
        guests = (await state_of(c, world, family))["entities"]["guests"]
        assert guests["g-1"]["fields"]["contact"] == "+44 20 7946 0000"
        events = [e["event"] for e in await history(c, world) if e["event"]["channel"] == "guests"]
        assert [e["data"]["fields"]["contact"] for e in events] == [contact, "+44 20 7946 0000"]
        r = await c.get(f"/api/weddings/{world.wedding}/audit", headers=world.auth(world.couple))
        changed = [a["details"] for a in r.json()["items"] if a["action"] == "entity_changed"]
        update = next(d for d in changed if d["entity_id"] == "g-1" and d["op"] == "update")
        assert (update["before"], update["after"]) == (
            {"contact": contact},
            {"contact": "+44 20 7946 0000"},
        )
    resumed = await join_member(world, gateways[1], family)
    await send(resumed.ws, type="resume", after_seq=0)
    replayed = await resumed.event("entity.created", entity_id="g-1")
    assert replayed["data"]["fields"]["contact"] == contact
    for m in (couple, other, resumed):
        await m.ws.close()


async def test_reserved_subjects_are_refused(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """Finding 13: a token whose sub is an id the system uses for itself reads nothing —
    not the admin API's audit entries of other weddings through an export, not anything."""
    async with httpx.AsyncClient(base_url=world.base) as c:
        admin = {"Authorization": f"Bearer {settings.auth.admin_token}"}
        r = await c.post(
            f"/api/admin/weddings/{world.wedding}/users/{world.couple}/disconnect",
            headers=admin,
            json={},
        )
        assert r.status_code in (200, 202), r.text  # an audit entry by "admin-api"
        for sub in (*sorted(RESERVED_USER_IDS), "System", " server"):
            token = {"Authorization": "Bearer " + issue_token(settings.auth, sub)}
            for path in ("/api/me/export", "/api/notifications", f"/api/weddings/{world.wedding}"):
                r = await c.get(path, headers=token)
                assert r.status_code == 401, (sub, path, r.text)
                assert r.json()["code"] == "reserved_subject"
            r = await c.put(
                f"/api/weddings/{world.wedding}/members/{sub}",
                headers=world.auth(world.couple),
                json={"role": "guest"},
            )
            assert r.status_code == 422 and r.json()["code"] == "invalid", r.text
    # every id the code writes as a non-member actor is reserved
    assert {
        SERVER_ACTOR.user_id,
        SYSTEM_ACTOR.user_id,
        AUDIT_ACTOR,
    } <= RESERVED_USER_IDS
