"""Record-level scope (issue 22, finding 19): a vendor sees and changes only the tasks
assigned to them and their own vendor record — live, on resume, over HTTP and in the worker.

First the rule on its own (streams/scope.py, the pure engine), then the attacks through
real sockets on two gateways and a real `wedsync worker conflicts` process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from config.settings import Settings
from streams.changes import ChangeRequest
from streams.permissions import Role, WeddingStatus
from streams.protocol import Actor
from streams.scope import RecordScope
from streams.state import EntityKind, Op, State, fold, validate_fields
from tests.kits.statekit import Member, join_member, quiesce, wedding_state, without_empty
from tests.kits.world import World, connect, recv, send, worker_process
from workers.conflicts.engine import Rules, apply_change
from workers.conflicts.outcome import Entity, View

RULES = Rules(approval_threshold=100_000, approval_ttl=3600.0)
V1, V2 = Actor(user_id="vendor-1", role=Role.VENDOR), Actor(user_id="vendor-2", role=Role.VENDOR)
PLANNER = Actor(user_id="planner-1", role=Role.PLANNER)


# -- the rule --------------------------------------------------------------------------------


def task(eid: str, assignee: str | None, version: int = 1) -> Entity:
    fields = validate_fields(EntityKind.TASKS, Op.CREATE, {"title": eid, "assignee": assignee})
    return Entity(EntityKind.TASKS, eid, version, False, fields, {}, {}, "planner-1", "planner-1")


def change(
    actor: Actor,
    op: Op,
    eid: str,
    fields: dict[str, Any] | None = None,
    kind: EntityKind = EntityKind.TASKS,
) -> ChangeRequest:
    base = None if op is Op.CREATE else 1
    return ChangeRequest(
        client_id="c",
        wedding_id="w",
        actor=actor,
        entity=kind,
        entity_id=eid,
        op=op,
        fields=fields or {},
        base_version=base,
        ts=0.0,
    )


def outcome(c: ChangeRequest, *rows: Entity) -> list[dict[str, Any]]:
    out = apply_change(c, 7, View(list(rows)), WeddingStatus.PLANNING, RULES)
    return [{"type": e.type, "channel": e.channel.value, "data": e.data} for e in out.events]


def test_the_worker_refuses_a_vendors_change_to_records_not_theirs() -> None:
    theirs = task("t2", "vendor-2")
    for c in (
        change(V1, Op.UPDATE, "t2", {"done": True}),
        change(V1, Op.DELETE, "t2"),
        change(V1, Op.CREATE, "t2", {"title": "x", "assignee": "vendor-1"}),
        change(V1, Op.UPDATE, "t1", {"assignee": "vendor-2"}),
        change(V1, Op.CREATE, "t3", {"title": "x", "assignee": None}),
    ):
        rows = [theirs, task("t1", "vendor-1")]
        [rejected] = outcome(c, *rows)
        assert rejected["type"] == "conflict.rejected", c
        assert rejected["data"]["reason"] == "forbidden"
        assert rejected["data"]["current"] is None  # nothing of a record not theirs
    vendor_record = Entity(
        EntityKind.VENDORS,
        "v2",
        1,
        False,
        {"name": "Flo", "member": "vendor-2"},
        {},
        {},
        "planner-1",
        "planner-1",
    )
    rename = change(V1, Op.UPDATE, "v2", {"name": "Mine"}, EntityKind.VENDORS)
    assert outcome(rename, vendor_record)[0]["data"]["reason"] == "forbidden"
    # their own: applied, and the events say whose record it is before and after
    [done] = outcome(change(V1, Op.UPDATE, "t1", {"done": True}), task("t1", "vendor-1"))
    assert done["type"] == "entity.updated"
    assert done["data"]["scope"] == {"before": "vendor-1", "after": "vendor-1"}
    # the planner reassigns anything; the couple and planner are never scoped
    [moved] = outcome(
        change(PLANNER, Op.UPDATE, "t1", {"assignee": "vendor-2"}), task("t1", "vendor-1")
    )
    assert moved["data"]["scope"] == {"before": "vendor-1", "after": "vendor-2"}


def stored(type_: str, eid: str, scope: dict[str, Any] | None, **data: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "entity": "tasks",
        "entity_id": eid,
        "version": 2,
        "fields": {},
        "changed": [],
        "cause": "change",
        "change": {"id": "c", "seq": 1, "by": "planner-1"},
        **data,
    }
    if scope is not None:
        d["scope"] = scope
    return {
        "id": "e",
        "type": type_,
        "channel": "tasks",
        "actor": {"user_id": "planner-1", "role": "planner"},
        "data": d,
        "ts": 0.0,
    }


def test_what_a_vendor_sees_of_a_record_event() -> None:
    me = RecordScope.of(Role.VENDOR, "vendor-1")
    assert me is not None and me.channels == {"tasks", "vendors"}
    assert RecordScope.of(Role.PLANNER, "planner-1") is None
    full = {"title": "t", "assignee": "vendor-1", "due": None, "done": False}

    def scope(before: str | None, after: str | None) -> dict[str, Any]:
        return {"before": before, "after": after}

    mine = stored("entity.updated", "t", scope(None, "vendor-1"), fields=full)
    assert me.view(mine) is mine  # assigned to them: whole
    assert me.view(stored("entity.created", "t", scope(None, "vendor-2"))) is None
    deleted = stored("entity.deleted", "t", scope("vendor-1", None))
    assert me.view(deleted) is deleted
    away = me.view(stored("entity.updated", "t", scope("vendor-1", "vendor-2"), fields=full))
    assert away is not None and away["type"] == "entity.deleted"
    assert away["data"] == {
        "entity": "tasks",
        "entity_id": "t",
        "version": 2,
        "fields": {},
        "changed": [],
        "cause": "reassigned",
        "change": {"id": "c", "seq": 1, "by": "planner-1"},
    }
    # folding the removal and then the reassignment back gives the task whole
    state: State = {}
    tombstones: dict[tuple[str, str], int] = {}
    fold(state, tombstones, away)
    back = stored("entity.updated", "t", scope("vendor-2", "vendor-1"), fields=full, version=3)
    fold(state, tombstones, me.view(back) or {})
    assert state == {"tasks": {"t": {"version": 3, "fields": full}}}
    # conflicts: about their record, or the outcome of their own change
    theirs = stored("conflict.rejected", "t", scope("vendor-2", "vendor-2"))
    assert me.view(theirs) is None
    own = stored("conflict.rejected", "t", scope(None, None), change={"id": "c", "by": "vendor-1"})
    assert me.view(own) is own
    message = {"id": "m", "type": "message", "channel": "tasks", "data": {"text": "hi"}}
    assert me.view(message) is message  # messages on the channel: everyone who reads it
    # events stored before scopes were recorded: what their fields say
    legacy = stored("entity.created", "t", None, fields=full)
    assert me.view(legacy) is legacy
    assert me.view(stored("entity.deleted", "t", None)) is None


def test_the_edge_decides_what_the_frame_alone_tells() -> None:
    me = RecordScope.of(Role.VENDOR, "vendor-1")
    assert me is not None
    fields: dict[str, Any] = {"title": "x", "assignee": None}
    assert me.check_change(EntityKind.TASKS, Op.CREATE, {"title": "x"}, fields) is None
    assert fields["assignee"] == "vendor-1"  # a vendor's new task is theirs
    for op, given in (
        (Op.CREATE, {"assignee": "vendor-2"}),
        (Op.CREATE, {"assignee": None}),
        (Op.UPDATE, {"assignee": "vendor-2"}),
    ):
        assert me.check_change(EntityKind.TASKS, op, given, dict(given)), (op, given)
    assert me.check_change(EntityKind.VENDORS, Op.UPDATE, {"member": "x"}, {"member": "x"})
    assert me.check_change(EntityKind.TASKS, Op.UPDATE, {"done": True}, {"done": True}) is None
    assert me.check_change(EntityKind.TIMELINE, Op.CREATE, {}, {}) is None


# -- through the public API ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(settings, "conflicts"):
        yield


async def barrier(sender: Member, members: list[Member]) -> None:
    """A chat message everyone reads: once each member has it, they have every event
    before it that they will ever get."""
    mark = uuid.uuid4().hex
    await send(sender.ws, type="message", id=mark, channel="chat", data={"mark": mark})
    for m in members:
        await m.until(lambda e: e.get("type") == "message" and e["data"].get("mark") == mark)


def ids(m: Member) -> set[str]:
    """Every entity id named by an event ``m`` received."""
    return {e["data"]["entity_id"] for e in m.events if "entity_id" in (e.get("data") or {})}


async def history(world: World, user: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(user),
            params={"limit": 1000},
        )
        assert r.status_code == 200, r.text
        return [e["event"] for e in r.json()["events"]]


async def setup(world: World, gateways: list[str]) -> tuple[Member, Member, Member]:
    """The planner and two vendors (on both gateways); each vendor has a task and a vendor
    record, and there is a task nobody has."""
    planner = await join_member(world, gateways[0], await world.add("planner"))
    v1 = await join_member(world, gateways[1], await world.add("vendor"))
    v2 = await join_member(world, gateways[0], await world.add("vendor"))
    for v, n in ((v1, "1"), (v2, "2")):
        await planner.change("tasks", f"t{n}", "create", {"title": f"Task {n}", "assignee": v.user})
        await planner.change(
            "vendors",
            f"v{n}",
            "create",
            {"name": f"Vendor {n}", "category": "music", "member": v.user},
        )
    await planner.change("tasks", "open", "create", {"title": "Nobody's"})
    await quiesce(world, [planner])
    await barrier(planner, [v1, v2])
    return planner, v1, v2


async def test_a_vendor_reads_only_their_tasks_and_vendor_record(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    planner, v1, v2 = await setup(world, gateways)
    everything = (await wedding_state(world, planner.user))["entities"]
    for v, n in ((v1, "1"), (v2, "2")):
        mine = {
            "tasks": {f"t{n}": everything["tasks"][f"t{n}"]},
            "vendors": {f"v{n}": everything["vendors"][f"v{n}"]},
        }
        assert without_empty(v.state) == mine, v.user  # live fan-out
        assert ids(v) == {f"t{n}", f"v{n}"}
        state = (await wedding_state(world, v.user))["entities"]
        assert state == {"timeline": {}, **mine}  # GET /state
        past = await history(world, v.user)  # GET /events
        assert {e["data"]["entity_id"] for e in past if "entity_id" in e["data"]} == ids(v)
        # resume from the start on a new socket: the same, replayed
        token = await world.join(v.user)
        ws = await connect(gateways[0], world.wedding, token, after=0)
        replayed: State = {}
        tombstones: dict[tuple[str, str], int] = {}
        seen: set[str] = set()
        while (frame := await recv(ws))["type"] != "resumed":
            if frame["type"] == "event":
                fold(replayed, tombstones, frame["event"])
                seen.add(frame["event"]["data"].get("entity_id", ""))
        await ws.close()
        assert without_empty(replayed) == mine and seen - {""} == ids(v)
    # everyone else sees every record
    assert ids(planner) >= {"t1", "t2", "open", "v1", "v2"}
    assert {"t1", "t2", "open"} <= {
        e["data"].get("entity_id") for e in await history(world, planner.user)
    }


async def test_a_vendor_cannot_change_records_not_theirs(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    planner, v1, v2 = await setup(world, gateways)
    before = (await wedding_state(world, planner.user))["entities"]
    # refused at the edge: what the frame itself says
    for kind, eid, op, fields, base in (
        ("tasks", "new", "create", {"title": "x", "assignee": v2.user}, None),
        ("tasks", "t1", "update", {"assignee": v2.user}, 1),  # giving theirs away
        ("tasks", "t1", "update", {"assignee": None}, 1),
        ("vendors", "v1", "update", {"member": v2.user}, 1),
        ("vendors", "v9", "create", {"name": "x", "category": "y", "member": v2.user}, None),
    ):
        frame = await v1.ack(await v1.change(kind, eid, op, fields, base))
        assert (frame["type"], frame["code"]) == ("error", "forbidden"), (kind, op, fields)
    # refused by the worker, which knows whose record it is now
    attacks = [
        await v1.change("tasks", "t2", "update", {"done": True, "title": "Mine"}, 1),
        await v1.change("tasks", "t2", "delete", base=1),
        await v1.change("tasks", "open", "update", {"done": True}, 1),
        await v1.change("tasks", "t2", "create", {"title": "reuse the id"}),
        await v1.change("vendors", "v2", "update", {"contact": "evil@example.org"}, 1),
        await v1.change("vendors", "v2", "delete", base=1),
    ]
    # a new task of theirs needs no assignee: it is theirs
    own = await v1.change("tasks", "mine", "create", {"title": "Bring cables"})
    await v1.settle()
    await quiesce(world, [planner])
    for cid in attacks:
        [rejected] = v1.seen("conflict.rejected", cid)
        assert rejected["data"]["reason"] == "forbidden" and rejected["data"]["current"] is None
    after = (await wedding_state(world, planner.user))["entities"]
    assert {k: after[k] for k in ("tasks", "vendors")} == {
        "tasks": {**before["tasks"], "mine": after["tasks"]["mine"]},
        "vendors": before["vendors"],
    }  # nothing of theirs changed
    assert after["tasks"]["mine"]["fields"]["assignee"] == v1.user
    assert v1.entity("tasks", "mine") == after["tasks"]["mine"]
    await barrier(planner, [v2])
    assert v2.seen("conflict.rejected") == [] and "mine" not in ids(v2)  # not theirs to see
    assert v1.seen("entity.created", own)


async def test_reassigned_tasks_leave_and_reach_a_vendors_view_whole(
    world: World, gateways: list[str], conflicts_worker: None
) -> None:
    planner, v1, v2 = await setup(world, gateways)
    await planner.change("tasks", "t1", "update", {"title": "Sound check", "assignee": v2.user}, 1)
    gone = await v1.event("entity.deleted", entity_id="t1")
    assert gone["data"]["cause"] == "reassigned" and gone["data"]["version"] == 2
    arrived = await v2.event("entity.updated", entity_id="t1")
    await quiesce(world, [planner])
    everything = (await wedding_state(world, planner.user))["entities"]["tasks"]
    assert arrived["data"]["fields"] == everything["t1"]["fields"]  # whole, not a diff
    assert v1.entity("tasks", "t1") is None and v2.entity("tasks", "t1") == everything["t1"]
    assert "t1" not in (await wedding_state(world, v1.user))["entities"]["tasks"]
    # v1 may no longer change it, v2 may
    late = await v1.change("tasks", "t1", "update", {"done": True}, 2)
    assert (await v1.expect("conflict.rejected", late))["data"]["reason"] == "forbidden"
    await v2.change("tasks", "t1", "update", {"done": True}, 2)
    await v2.event("entity.updated", entity_id="t1")
    # back to v1: whole again, over the removal folded before
    await planner.change("tasks", "t1", "update", {"assignee": v1.user}, 3)
    back = await v1.event("entity.updated", entity_id="t1")
    await v2.event("entity.deleted", entity_id="t1", cause="reassigned")
    await quiesce(world, [planner])
    now = (await wedding_state(world, planner.user))["entities"]["tasks"]["t1"]
    assert back["data"]["fields"] == now["fields"] and now["fields"]["done"] is True
    for v in (v1, v2):
        await barrier(planner, [v])
        assert without_empty(v.state) == without_empty(
            (await wedding_state(world, v.user))["entities"]
        )
    # and the history shows a vendor exactly what their socket showed
    for v in (v1, v2):
        live = [
            (e["type"], e["data"].get("entity_id"), e["data"].get("cause"))
            for e in v.events
            if e["type"].startswith(("entity.", "conflict."))
        ]
        past = [
            (e["type"], e["data"].get("entity_id"), e["data"].get("cause"))
            for e in await history(world, v.user)
            if e["type"].startswith(("entity.", "conflict."))
        ]
        assert past == live, v.user
