"""Live documents through the real path: pycrdt clients speaking y-websocket's protocol to
two `wedsync api` processes, updates stored in WEDSYNC_DOCS, the documents worker folding
them into PostgreSQL snapshots (docs/documents.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from pycrdt import create_awareness_message

from app.documents.sync import AwarenessEntry, awareness_update
from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import DOCUMENTS
from streams.documents import document_subject
from streams.protocol import Close
from tests.kits.world import World, eventually, worker_process
from tests.kits.ydoc import YClient, api, create_document


@pytest_asyncio.fixture(scope="module")
async def documents_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(settings, "documents"):
        yield


async def document(world: World, user: str, name: str) -> dict[str, Any]:
    r = await create_document(world, user, name)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def head(conns: Connections, wedding: str, document_id: str) -> int:
    try:
        msg = await conns.js.get_last_msg(DOCUMENTS.name, document_subject(wedding, document_id))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def test_two_processes_converge_and_equal_the_snapshot(
    world: World, gateways: list[str], conns: Connections, documents_worker: None
) -> None:
    planner = await world.add("planner")
    doc = await document(world, world.couple, "notes")
    assert doc["kind"] == "shared" and doc["can_write"]
    a_token, b_token = await world.join(world.couple), await world.join(planner)
    async with (
        YClient(gateways[0], world.wedding, "notes", a_token) as a,
        YClient(gateways[1], world.wedding, "notes", b_token) as b,
    ):
        # concurrent: neither has seen the other's edit when it makes its own
        await asyncio.gather(a.edit(0, "Hello "), b.edit(0, "world"))
        for i in range(20):  # and some more, interleaved
            await (a if i % 2 else b).edit(0, str(i % 10))
        await a.until(lambda: len(str(a)) == 31)
        await b.until(lambda: len(str(b)) == 31)
        assert str(a) == str(b)
        text = str(a)
    last = await head(conns, world.wedding, doc["id"])

    async def compacted() -> dict[str, Any] | None:
        r = await api(world, world.couple, "GET", "/notes")
        body: dict[str, Any] = r.json()
        return body if body["snapshot_seq"] == last else None

    await eventually(compacted, 20)
    versions = (await api(world, world.couple, "GET", "/notes/versions")).json()["versions"]
    assert versions[-1]["seq"] == last
    authors: dict[str, int] = {}
    for v in versions:
        for user, n in v["authors"].items():
            authors[user] = authors.get(user, 0) + n
    assert authors == {world.couple: 11, planner: 11}
    snapshot = (await api(world, world.couple, "GET", f"/notes/versions/{last}")).json()
    assert snapshot["text"] == text
    # a new client loads the snapshot (plus an empty tail) and has the same text
    async with YClient(gateways[1], world.wedding, "notes", a_token) as c:
        assert str(c) == text


async def test_offline_client_gets_exactly_what_it_missed(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    await document(world, world.couple, "run_of_show")
    a_token, b_token = await world.join(world.couple), await world.join(planner)
    async with YClient(gateways[0], world.wedding, "run_of_show", a_token) as a:
        b = YClient(gateways[1], world.wedding, "run_of_show", b_token)
        async with b:
            await a.edit(0, "16:00 ceremony\n")
            await b.until(lambda: str(b) == "16:00 ceremony\n")
        # b is offline: both edit meanwhile
        await a.edit(len(str(a)), "17:00 drinks\n")
        b.text.insert(0, "15:30 guests arrive\n")  # offline: only in b's document
        b.received.clear()
        await b.open()  # the same document: its state vector says what it has
        await asyncio.wait_for(b.synced.wait(), 10)
        want = "15:30 guests arrive\n16:00 ceremony\n17:00 drinks\n"
        await b.until(lambda: str(b) == want)
        await a.until(lambda: str(a) == want)
        # the server's step 2 held only what b missed (one line), not the whole document
        step2 = max((m for m in b.received if m[:2] == b"\x00\x01"), key=len)
        assert b"17:00 drinks" in step2 and b"16:00 ceremony" not in step2
        await b.close()


async def test_permissions(world: World, gateways: list[str]) -> None:
    guest, vendor, family = (
        await world.add("guest"),
        await world.add("vendor"),
        await world.add("family"),
    )
    vows = f"vows:{world.couple}"
    await document(world, world.couple, vows)
    await document(world, world.couple, "run_of_show")
    await document(world, world.couple, "notes")
    # a private document only by its own member; a guest creates nothing
    assert (await create_document(world, family, f"speech:{world.couple}")).status_code == 403
    assert (await create_document(world, guest, "seating_notes")).status_code == 403
    assert (await create_document(world, world.couple, "Bad Name")).status_code == 422

    async def listed(user: str) -> set[str]:
        r = await api(world, user, "GET", "")
        return {d["name"] for d in r.json()["documents"]}

    assert await listed(world.couple) == {vows, "run_of_show", "notes"}
    assert await listed(vendor) == {"run_of_show"}
    assert await listed(guest) == {"run_of_show"}
    assert await listed(family) == {"run_of_show", "notes"}
    assert (await api(world, family, "GET", f"/{vows}")).status_code == 404

    async def refused(user: str, name: str) -> tuple[int, str]:
        c = YClient(gateways[1], world.wedding, name, await world.join(user))
        await c.open()
        return await c.closed_with()

    assert (await refused(guest, vows))[0] == Close.FORBIDDEN
    assert (await refused(vendor, vows))[0] == Close.FORBIDDEN
    assert (await refused(vendor, "notes"))[0] == Close.FORBIDDEN
    assert (await refused(family, vows))[0] == Close.FORBIDDEN
    assert (await refused(world.couple, "no_such_doc"))[0] == Close.FORBIDDEN
    async with YClient(gateways[1], world.wedding, "run_of_show", await world.join(vendor)):
        pass  # a vendor opens the run of show
    # only the owner shares; once shared, family reads it (and may not write)
    assert (await api(world, family, "PATCH", f"/{vows}", json={"shared": True})).status_code == 404
    r = await api(world, world.couple, "PATCH", f"/{vows}", json={"shared": True})
    assert r.status_code == 200 and r.json()["shared"]
    couple = YClient(gateways[0], world.wedding, vows, await world.join(world.couple))
    async with couple, YClient(gateways[1], world.wedding, vows, await world.join(family)) as f:
        await couple.edit(0, "I promise")
        await f.until(lambda: str(f) == "I promise")
        await f.edit(0, "NOT ")  # a reader's edit is not stored
        await couple.edit(len(str(couple)), ".")
        await f.until(lambda: str(f).endswith("."))
        assert str(couple) == "I promise."
        # unsharing closes the family member's socket at once
        r = await api(world, world.couple, "PATCH", f"/{vows}", json={"shared": False})
        assert r.status_code == 200
        assert (await f.closed_with())[0] == Close.FORBIDDEN
    assert (await refused(guest, vows))[0] == Close.FORBIDDEN


async def test_awareness_is_relayed_never_stored(
    world: World, gateways: list[str], conns: Connections
) -> None:
    planner = await world.add("planner")
    doc = await document(world, world.couple, "notes")
    async with YClient(gateways[0], world.wedding, "notes", await world.join(world.couple)) as a:
        await a.edit(0, "x")
        stored = await eventually(lambda: head(conns, world.wedding, doc["id"]))
        await a.announce({"user": {"name": "Ann"}, "cursor": {"anchor": 1}})
        await a.until(lambda: a.doc.client_id in a.awareness)  # echoed, as y-websocket does
        # the first socket on another process: that room asks the others for awareness
        async with YClient(gateways[1], world.wedding, "notes", await world.join(planner)) as b:
            await b.until(lambda: a.doc.client_id in b.awareness)
            assert b.awareness[a.doc.client_id]["user"]["name"] == "Ann"
            await a.announce({"user": {"name": "Ann"}, "cursor": {"anchor": 0}}, clock=2)
            await b.until(lambda: b.awareness[a.doc.client_id]["cursor"] == {"anchor": 0})
            # a socket opening later in a room that knows it gets it at once
            c = YClient(gateways[1], world.wedding, "notes", await world.join(planner))
            async with c:
                await c.until(lambda: a.doc.client_id in c.awareness)
            assert await head(conns, world.wedding, doc["id"]) == stored  # nothing stored
            # a's socket closes: the others are told its client is gone
            await a.close()
            await b.until(lambda: a.doc.client_id not in b.awareness)


async def test_awareness_follows_presence_visibility(world: World, gateways: list[str]) -> None:
    """A guest does not see a vendor's cursor (nor a vendor a guest's), as with presence."""
    vendor, guest = await world.add("vendor"), await world.add("guest")
    await document(world, world.couple, "run_of_show")
    name = "run_of_show"
    async with (
        YClient(gateways[0], world.wedding, name, await world.join(vendor)) as v,
        YClient(gateways[1], world.wedding, name, await world.join(world.couple)) as c,
        YClient(gateways[1], world.wedding, name, await world.join(guest)) as g,
    ):
        await v.announce({"user": {"name": "Caterer"}})
        await c.until(lambda: v.doc.client_id in c.awareness)
        # the couple's, sent after the vendor's reached this process: the guest gets it
        # after the vendor's would have come
        await c.announce({"user": {"name": "Couple"}})
        await g.until(lambda: c.doc.client_id in g.awareness)
        assert v.doc.client_id not in g.awareness
        await g.announce({"user": {"name": "Guest"}})
        await c.until(lambda: g.doc.client_id in c.awareness)
        await v.until(lambda: c.doc.client_id in v.awareness)
        await c.announce({"user": {"name": "Couple"}, "cursor": 1}, clock=2)
        # each waits on its own socket: ``until`` wakes only on what that client receives
        await c.until(lambda: c.awareness.get(c.doc.client_id, {}).get("cursor") == 1)
        await v.until(lambda: v.awareness[c.doc.client_id].get("cursor") == 1)
        assert g.doc.client_id not in v.awareness


async def test_awareness_of_another_socket_is_not_overwritten(
    world: World, gateways: list[str]
) -> None:
    planner = await world.add("planner")
    await document(world, world.couple, "notes")
    async with (
        YClient(gateways[0], world.wedding, "notes", await world.join(world.couple)) as a,
        YClient(gateways[0], world.wedding, "notes", await world.join(planner)) as b,
    ):
        await a.announce({"user": {"name": "Ann"}})
        await b.until(lambda: a.doc.client_id in b.awareness)
        assert b.ws is not None  # b's socket claims a's client id:
        entry = AwarenessEntry(a.doc.client_id, 9, '{"user": {"name": "Mallory"}}')
        await b.ws.send(create_awareness_message(awareness_update([entry])))
        await b.announce({"user": {"name": "Bob"}})
        await a.until(lambda: b.doc.client_id in a.awareness)
        assert b.awareness[a.doc.client_id]["user"]["name"] == "Ann"
        assert a.awareness[a.doc.client_id]["user"]["name"] == "Ann"


BAD = [
    b"",
    b"\x00\x07",
    b"\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x00\x02\x03\x01\x02\x03",
]  # empty, unknown step, overlong length, not an update


@pytest.mark.parametrize("bad", BAD)
async def test_invalid_messages_close_the_socket(
    world: World, gateways: list[str], bad: bytes
) -> None:
    await document(world, world.couple, "notes")
    async with YClient(gateways[0], world.wedding, "notes", await world.join(world.couple)) as a:
        assert a.ws is not None
        await a.ws.send(bad)
        assert (await a.closed_with())[0] == 1007


async def test_export_and_erase_of_documents(
    world: World, gateways: list[str], conns: Connections, documents_worker: None
) -> None:
    family = await world.add("family")
    vows = f"vows:{family}"
    mine = await document(world, family, vows)
    notes = await document(world, world.couple, "notes")
    async with (
        YClient(gateways[0], world.wedding, vows, await world.join(family)) as v,
        YClient(gateways[1], world.wedding, "notes", await world.join(family)) as n,
    ):
        await v.edit(0, "Always")
        await n.edit(0, "Flowers: peonies")
        # stored once the server read them (it publishes before it reads on)
        last = await eventually(lambda: head(conns, world.wedding, notes["id"]))
        await eventually(lambda: head(conns, world.wedding, mine["id"]))

    async def compacted() -> bool:
        r = await api(world, world.couple, "GET", "/notes")
        return bool(r.json()["snapshot_seq"] == last)

    await eventually(compacted, 20)
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get("/api/me/export", headers=world.auth(family))
        assert r.status_code == 200
        exported = {d["name"]: d for d in r.json()["documents"]}
        assert exported[vows]["text"] == "Always" and exported[vows]["kind"] == "private"
        assert exported["notes"]["updates"] == 1 and "text" not in exported["notes"]
        r = await c.delete("/api/me", headers=world.auth(family))
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["rows_deleted"]["documents"] == 1
        assert report["rows_redacted"]["document_authors"] == 1
    async with conns.pool.acquire() as db:
        assert (
            await db.fetchval("SELECT count(*) FROM documents WHERE id = $1", uuid.UUID(mine["id"]))
            == 0
        )
        assert (
            await db.fetchval("SELECT count(*) FROM document_authors WHERE user_id = $1", family)
            == 0
        )
    assert await head(conns, world.wedding, mine["id"]) == 0  # its updates purged
    # what they typed into the shared notes stays: the wedding's text
    async with YClient(gateways[0], world.wedding, "notes", await world.join(world.couple)) as c2:
        assert str(c2) == "Flowers: peonies"


async def test_versions_and_restore(
    world: World, gateways: list[str], conns: Connections, documents_worker: None
) -> None:
    doc = await document(world, world.couple, "notes")
    token = await world.join(world.couple)

    async def compacted_to(seq: int) -> bool:
        r = await api(world, world.couple, "GET", "/notes")
        return bool(r.json()["snapshot_seq"] == seq)

    async with YClient(gateways[0], world.wedding, "notes", token) as a:
        await a.edit(0, "Version one")
        first = await eventually(lambda: head(conns, world.wedding, doc["id"]))
        await eventually(lambda: compacted_to(first), 20)
        await a.edit(len(str(a)), ", then two")

        async def past_first() -> int | None:
            h = await head(conns, world.wedding, doc["id"])
            return h if h > first else None

        second = await eventually(past_first)
        await eventually(lambda: compacted_to(second), 20)
        versions = (await api(world, world.couple, "GET", "/notes/versions")).json()["versions"]
        assert [v["seq"] for v in versions] == [first, second]
        assert [v["authors"] for v in versions] == [{world.couple: 1}, {world.couple: 1}]
        old = (await api(world, world.couple, "GET", f"/notes/versions/{first}")).json()
        assert old["text"] == "Version one"
        assert (await api(world, world.couple, "GET", "/notes/versions/999999")).status_code == 404
        # restoring is one more update: the open editor converges on the old text
        r = await api(world, world.couple, "POST", f"/notes/versions/{first}/restore")
        assert r.status_code == 200 and r.json()["text"] == "Version one"
        await a.until(lambda: str(a) == "Version one")
    guest = await world.add("guest")
    r = await api(world, guest, "POST", f"/notes/versions/{first}/restore")
    assert r.status_code == 404  # a guest does not see the notes at all


async def test_document_sockets_per_user_are_capped(world: World, gateways: list[str]) -> None:
    """WEDSYNC_WS_MAX_PER_USER (8) document sockets per user and wedding and process."""
    await document(world, world.couple, "notes")
    token = await world.join(world.couple)
    opened = [YClient(gateways[0], world.wedding, "notes", token) for _ in range(8)]
    for c in opened:
        await c.__aenter__()
    try:
        extra = YClient(gateways[0], world.wedding, "notes", token)
        await extra.open()
        assert (await extra.closed_with())[0] == Close.TRY_LATER
        async with YClient(gateways[1], world.wedding, "notes", token):
            pass  # another process counts its own
        await opened[0].close()

        async def room_again() -> bool:  # once the server has seen the close
            c = YClient(gateways[0], world.wedding, "notes", token)
            await c.open()
            done = asyncio.ensure_future(c.synced.wait())
            closed = asyncio.ensure_future(c.closed_with())
            await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
            ok = done.done()
            done.cancel()
            closed.cancel()
            await c.close()
            return ok

        await eventually(room_again)
    finally:
        for c in opened[1:]:
            await c.close()
