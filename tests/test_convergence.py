"""Convergence, the acceptance property of wedding state: whatever 3 to 5 members do at once —
creates, updates and deletes of the same few entities, edits made "offline" from old
versions, concurrent edits of the same fields — once everything is applied, every member's
folded state, ``/state`` and the PostgreSQL rows are the same.

Two tests share one generator of histories (hypothesis):

* the pure engine (no I/O, hundreds of histories): the worker's loop over
  :func:`apply_change`, each outcome checked against the rules and folded by simulated
  clients that sync now and then;
* the real path (a few histories): members on two gateways send the history over real
  sockets without waiting for each other, a real conflicts worker applies it; all states
  agree, and agree with the pure engine replayed in the stream order the acks gave.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import msgspec
import pytest_asyncio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from config.settings import Settings
from runtime.connections import Connections
from streams.changes import ChangeRequest
from streams.permissions import MATRIX, Channel, Role, WeddingStatus
from streams.protocol import Actor
from streams.state import (
    DEFAULTS,
    FIELDS,
    REQUIRED,
    SERVER_FIELDS,
    EntityKind,
    Op,
    State,
    fold,
    validate_fields,
)
from tests.kits.statekit import (
    Member,
    join_member,
    quiesce,
    stored_entities,
    wedding_state,
    without_empty,
)
from tests.kits.world import World, worker_process
from workers.conflicts.engine import Rules, apply_change
from workers.conflicts.outcome import Emit, Entity, Outcome, View

THRESHOLD = 100_000
RULES = Rules(approval_threshold=THRESHOLD, approval_ttl=3600.0)
TL = EntityKind.TIMELINE
IDS = {
    "tasks": ("t0", "t1"),
    "guests": ("g0", "g1"),
    "timeline": ("e0", "e1", "e2"),
    "budget": ("b0", "b1"),
}

# few values per field, so that concurrent edits often collide
VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "tasks": {
        "title": st.sampled_from(["a", "b", "c"]),
        "assignee": st.sampled_from([None, "ann", "bob"]),
        "due": st.sampled_from([None, "2027-06-01", "2027-06-05"]),
        "done": st.booleans(),
    },
    "guests": {
        "name": st.sampled_from(["Ann", "Bob"]),
        "rsvp": st.sampled_from(["pending", "yes", "no"]),
        "meal": st.sampled_from([None, "fish", "veg"]),
        "table": st.sampled_from([None, "1", "2"]),
        "plus_ones": st.integers(0, 2),
    },
    "timeline": {
        "title": st.sampled_from(["x", "y"]),
        "location": st.sampled_from([None, "garden", "hall"]),
        "vendor_id": st.sampled_from([None, "dj", "band"]),
    },
    "budget": {
        "category": st.sampled_from(["Flowers", "Venue"]),
        "estimated": st.sampled_from([0, 40_000, 150_000, 1_000_000]),
        "actual": st.sampled_from([None, 0, 120_000]),
        "paid": st.booleans(),
    },
}


def slot(i: int) -> str:
    """Half-hour slots from 08:00 on the wedding day, as stored."""
    minutes = 8 * 60 + 30 * i
    return f"2027-06-12T{minutes // 60:02d}:{minutes % 60:02d}:00Z"


# -- histories ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    client: int
    kind: str
    entity_id: str
    op: str
    fields: dict[str, Any]
    lag: int  # how many versions behind what the client knows it bases the edit on
    fallback: int  # the base it sends for an entity it knows nothing about


@dataclass(frozen=True)
class Sync:
    """The client reads what it has been sent (its own changes' outcomes at least)."""

    client: int


@dataclass(frozen=True)
class Decide:
    """A couple member decides one of the pending approvals (pure engine only)."""

    pick: int
    verdict: str


@dataclass(frozen=True)
class WeddingDay:
    """The wedding moves to wedding_day (pure engine only)."""


Step = Edit | Sync | Decide | WeddingDay


@dataclass(frozen=True)
class History:
    roles: tuple[str, ...]
    status: str
    prelude: list[Edit]  # creates by the couple that everyone has seen when the rest starts
    steps: list[Step] = field(default_factory=list)


@st.composite
def field_values(draw: st.DrawFn, kind: str, entity_id: str, op: str) -> dict[str, Any]:
    pool = dict(VALUES[kind])
    if kind == "timeline":  # mostly on earlier items (chains to cascade along), some cycles
        earlier = [i for i in IDS[kind] if i < entity_id]
        chains = st.sampled_from([earlier, earlier[-1:], []])
        pool["depends_on"] = (
            chains
            if op == "create"
            else chains | st.lists(st.sampled_from(IDS[kind]), max_size=2, unique=True)
        )
    names = sorted(pool) + (["end", "start", "start"] if kind == "timeline" else [])
    picked = set(
        draw(st.lists(st.sampled_from(names), min_size=0 if op == "create" else 1, max_size=3))
    )
    if op == "create":
        picked |= set(REQUIRED[EntityKind(kind)]) | (
            {"depends_on", "vendor_id"} if kind == "timeline" else set()
        )
    fields = {n: draw(pool[n]) for n in sorted(picked) if n in pool}
    if "start" in picked:
        s = draw(st.integers(0, 10))
        fields["start"] = slot(s)
        if "end" in picked:
            fields["end"] = slot(s + draw(st.integers(0, 4)))
    elif "end" in picked:  # may end before the current start: the worker refuses that
        fields["end"] = slot(draw(st.integers(0, 14)))
    return fields


@st.composite
def steps(
    draw: st.DrawFn, roles: tuple[str, ...], kinds: tuple[str, ...], engine_only: bool
) -> Step:
    what = draw(
        st.sampled_from(
            ["edit"] * 8 + ["sync"] * 2 + (["decide"] * 3 + ["wedding_day"] if engine_only else [])
        )
    )
    client = draw(st.integers(0, len(roles) - 1))
    if what == "sync":
        return Sync(client)
    if what == "decide":
        return Decide(
            draw(st.integers(0, 3)), draw(st.sampled_from(["grant", "grant", "deny", "expire"]))
        )
    if what == "wedding_day":
        return WeddingDay()
    writable = [k for k in kinds if MATRIX[Role(roles[client])][Channel(k)].write]
    if "budget" in writable and roles[client] != "couple":
        writable.append("budget")  # more approvals to decide
    kind = draw(st.sampled_from(writable))
    op = draw(
        st.sampled_from(["create", "update", "update", "update", "update", "update", "delete"])
    )
    entity_id = draw(st.sampled_from(IDS[kind]))
    return Edit(
        client,
        kind,
        entity_id,
        op,
        {} if op == "delete" else draw(field_values(kind, entity_id, op)),
        draw(st.sampled_from([0, 0, 0, 1, 2])),
        draw(st.integers(0, 2)),
    )


@st.composite
def histories(
    draw: st.DrawFn,
    kinds: tuple[str, ...],
    min_steps: int,
    max_steps: int,
    engine_only: bool = False,
) -> History:
    n = draw(st.integers(3, 5))
    roles = (
        "couple",
        *draw(
            st.lists(
                st.sampled_from(["couple", "planner", "family"]), min_size=n - 1, max_size=n - 1
            )
        ),
    )
    status = draw(st.sampled_from(["planning", "wedding_day"]))
    ids = [(k, i) for k in kinds for i in IDS[k]]
    later = draw(st.lists(st.sampled_from(ids), unique=True, max_size=3))  # created by anyone
    prelude = [
        Edit(0, k, i, "create", draw(field_values(k, i, "create")), 0, 0)
        for k, i in ids
        if (k, i) not in later
    ]
    return History(
        roles,
        status,
        prelude,
        draw(st.lists(steps(roles, kinds, engine_only), min_size=min_steps, max_size=max_steps)),
    )


def base_for(state: State, tombstones: dict[tuple[str, str], int], e: Edit) -> int | None:
    """The base version a client sends: what it knows, ``lag`` versions back."""
    if e.op == "create":
        return None
    held = state.get(e.kind, {}).get(e.entity_id)
    known = held["version"] if held else tombstones.get((e.kind, e.entity_id))
    return e.fallback if known is None else max(0, known - e.lag)


# -- the worker's loop without I/O, every outcome checked against the rules ---------------


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _time(a["start"]) < _time(b["end"]) and _time(b["start"]) < _time(a["end"])


class Model:
    """What ``workers.conflicts.worker`` does per message, minus PostgreSQL and NATS."""

    def __init__(self, status: WeddingStatus) -> None:
        self.status = status
        self.rows: dict[tuple[EntityKind, str], Entity] = {}
        self.log: list[dict[str, Any]] = []  # {"type", "data"} of every event, in order
        self.pending: dict[str, ChangeRequest] = {}
        self.seq = 0

    def live(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, eid), e in self.rows.items():
            if not e.deleted:
                out.setdefault(kind.value, {})[eid] = {"version": e.version, "fields": e.fields}
        return out

    def view(self, change: ChangeRequest) -> View:
        """What store.load reads: the entity, or the whole timeline (deleted rows too)."""
        if change.entity is TL:
            rows = [e for (k, _), e in self.rows.items() if k is TL]
        else:
            found = self.rows.get((change.entity, change.entity_id))
            rows = [] if found is None else [found]
        return View(copy.deepcopy(rows))

    def apply(
        self,
        change: ChangeRequest,
        seq: int | None = None,
        approved: bool = False,
        first: list[Emit] | None = None,
    ) -> Outcome:
        self.seq = seq if seq is not None else self.seq + 1
        view = self.view(change)
        pristine = copy.deepcopy(view.entities)
        out = apply_change(change, self.seq, view, self.status, RULES, approved=approved)
        assert view.entities == pristine, "apply_change changed its inputs"
        again = apply_change(
            change, self.seq, self.view(change), self.status, RULES, approved=approved
        )
        assert again == out, "a redelivered change must have the same outcome"
        self.check(change, out, approved)
        out.events[:0] = first or []
        self.commit(out)
        return out

    def decide(self, pick: int, verdict: str, actor: Actor) -> None:
        """``ConflictHandler._decide`` for a pending approval."""
        if not self.pending:
            return
        approval_id = sorted(self.pending)[pick % len(self.pending)]
        held = self.pending.pop(approval_id)
        result = {"grant": "granted", "deny": "denied", "expire": "expired"}[verdict]
        emit = Emit(
            f"approval.{result}",
            Channel.BUDGET,
            {
                "approval_id": approval_id,
                "entity": held.entity.value,
                "entity_id": held.entity_id,
                "by": actor.user_id,
                "requested_by": held.actor.user_id,
            },
        )
        if verdict == "grant":
            self.apply(held, approved=True, first=[emit])
        else:
            self.seq += 1
            self.commit(Outcome(events=[emit]))

    def commit(self, out: Outcome) -> None:
        for key, e in out.writes.items():
            self.rows[key] = copy.deepcopy(e)
        if out.approval is not None:
            self.pending[out.approval.id] = out.approval.change
        for emit in out.events:  # as stored: through JSON
            self.log.append(
                msgspec.json.decode(msgspec.json.encode({"type": emit.type, "data": emit.data}))
            )
        self.check_state(out)

    # -- the rules, as properties of one outcome ----------------------------------------

    def entity_events(self, kind: EntityKind, eid: str) -> list[dict[str, Any]]:
        return [
            e["data"]
            for e in self.log
            if e["type"].startswith("entity.")
            and e["data"]["entity"] == kind.value
            and e["data"]["entity_id"] == eid
        ]

    def changed_since(self, kind: EntityKind, eid: str, base: int) -> dict[str, str]:
        """Field → who last changed it, for the fields changed after version ``base``,
        as the events tell (not the worker's field_versions)."""
        out: dict[str, str] = {}
        for d in self.entity_events(kind, eid):
            if d["version"] > base:
                out.update(dict.fromkeys(d["changed"], d["change"]["by"]))
        return out

    def check(self, change: ChangeRequest, out: Outcome, approved: bool) -> None:
        kind, key = change.entity, (change.entity, change.entity_id)
        cur = self.rows.get(key)
        assert any(
            (e.data.get("change") or {}).get("id") == change.client_id for e in out.events
        ), "every change has an outcome naming it"
        own = [
            e for e in out.events if e.type.startswith("entity.") and e.data["cause"] == "change"
        ]
        rejected = [e for e in out.events if e.type == "conflict.rejected"]
        requested = [e for e in out.events if e.type == "approval.requested"]
        assert len(own) + len(rejected) + len(requested) == 1, out.events
        big = approval_needed(change, cur)
        needs_approval = kind is EntityKind.BUDGET and change.actor.role is not Role.COUPLE
        if rejected:
            assert (out.writes, out.audits, out.approval, len(out.events)) == ({}, [], None, 1)
            self.check_rejection(change, cur, rejected[0].data)
            return
        if requested:
            assert not approved and needs_approval and requested[0].data["amounts"] == big
            assert out.writes == {} and out.approval is not None
            return
        assert not (needs_approval and big and not approved), "a big move skipped approval"
        new = out.writes[key]
        assert own[0].data["version"] == new.version == (cur.version + 1 if cur else 1)
        if change.op is Op.DELETE:
            assert new.deleted and own[0].type == "entity.deleted"
            assert len(out.writes) == 1
        else:
            self.check_upsert(change, cur, new, out, approved)
        alerts = [e for e in out.events if e.type == "guests.changed_on_wedding_day"]
        assert len(alerts) == (
            kind is EntityKind.GUESTS and self.status is WeddingStatus.WEDDING_DAY
        )

    def check_rejection(
        self, change: ChangeRequest, cur: Entity | None, data: dict[str, Any]
    ) -> None:
        reason = data["reason"]
        if reason == "exists":
            assert change.op is Op.CREATE and cur is not None and not cur.deleted
        elif reason == "deleted":
            assert cur is not None and cur.deleted
            assert self.entity_events(change.entity, change.entity_id)[-1]["fields"] == {}
        elif reason == "not_found":
            assert change.op is not Op.CREATE and cur is None
        elif reason == "stale":  # only timeline times on the wedding day refuse a stale edit
            assert change.entity is TL and self.status is WeddingStatus.WEDDING_DAY
            assert cur is not None and change.base_version is not None
            since = self.changed_since(change.entity, change.entity_id, change.base_version)
            assert data["fields"] and set(data["fields"]) <= {"start", "end"} & set(since)
            assert all(cur.fields[f] != change.fields[f] for f in data["fields"])
        elif reason == "cycle":
            assert change.entity is TL and "depends_on" in change.fields
        else:
            assert reason == "invalid", reason
            assert cur is not None and change.base_version is not None
            if change.base_version <= cur.version:  # then the merged item ends too early
                assert change.entity is TL and "end" in change.fields

    def check_upsert(
        self, change: ChangeRequest, cur: Entity | None, new: Entity, out: Outcome, approved: bool
    ) -> None:
        kind = change.entity
        before = dict(cur.fields) if cur else dict(DEFAULTS[kind])
        for f, v in change.fields.items():  # the change's own fields win…
            assert new.fields[f] == v, f
        kept = SERVER_FIELDS.get(kind, ())
        for f, v in new.fields.items():  # …and nothing else moves (but a moved item's end)
            if f in kept:
                continue
            if f not in change.fields and not (
                kind is TL and f == "end" and cur is not None and "start" in change.fields
            ):
                assert v == before[f], f
        if kind is EntityKind.BUDGET:  # approved amounts: what the couple set or granted
            by_couple = approved or change.actor.role is Role.COUPLE
            for f in ("estimated", "actual"):
                sets = f in change.fields or change.fields.get("approved") is True
                keeps = None if cur is None else cur.fields.get(f"approved_{f}")
                expected = new.fields[f] if by_couple and sets else keeps
                assert new.fields[f"approved_{f}"] == expected, f
        stale: dict[str, str] = {}
        if cur is not None:
            assert change.base_version is not None
            since = self.changed_since(kind, change.entity_id, change.base_version)
            stale = {
                f: since[f] for f, v in change.fields.items() if f in since and cur.fields[f] != v
            }
        if kind is TL and self.status is WeddingStatus.WEDDING_DAY:
            assert not {"start", "end"} & set(stale), "a stale time move was not refused"
        resolved = {e.data["field"]: e.data for e in out.events if e.type == "conflict.resolved"}
        assert set(resolved) == set(stale), (resolved, stale)
        assert cur is not None or not resolved
        for f, d in resolved.items():
            assert cur is not None
            assert d["winner"] == {"user_id": change.actor.user_id, "value": new.fields[f]}
            assert d["overwritten"] == {"user_id": stale[f], "value": cur.fields[f]}
            assert d["version"] == new.version
        shifted: list[str] = []
        for e in out.events:
            if e.type == "timeline.cascaded":
                assert e.data["entity_id"] == change.entity_id and cur is not None
                delta = _time(new.fields["start"]) - _time(cur.fields["start"])
                assert e.data["delta_seconds"] == delta.total_seconds() != 0
                shifted = e.data["shifted"]
                for i in shifted:
                    old, moved = self.rows[(TL, i)], out.writes[(TL, i)]
                    for f in ("start", "end"):
                        assert _time(moved.fields[f]) - _time(old.fields[f]) == delta
                    assert moved.version == old.version + 1
        assert set(out.writes) == {(kind, change.entity_id)} | {(TL, i) for i in shifted}

    def check_state(self, out: Outcome) -> None:
        for e in out.writes.values():
            if e.deleted:
                continue
            assert set(e.fields) == set(FIELDS[e.kind].__struct_fields__)
            kept = SERVER_FIELDS.get(e.kind, ())
            client = {f: v for f, v in e.fields.items() if f not in kept}
            assert validate_fields(e.kind, Op.CREATE, client) == client
            assert all(1 <= v <= e.version for v in e.field_versions.values())
        timeline = {eid: e.fields for (k, eid), e in self.rows.items() if k is TL and not e.deleted}
        for emit in out.events:
            if emit.type == "timeline.conflict.detected":
                x, y = emit.data["items"]
                what = "vendor_id" if emit.data["reason"] == "vendor" else "location"
                assert _overlap(timeline[x], timeline[y])
                assert timeline[x][what] == timeline[y][what] == emit.data[what] is not None
        # no dependency cycle among live items
        graph = {i: [d for d in f["depends_on"] if d in timeline] for i, f in timeline.items()}
        done: set[str] = set()

        def visit(node: str, path: set[str]) -> None:
            assert node not in path, f"cycle through {node}"
            if node in done:
                return
            for nxt in graph[node]:
                visit(nxt, path | {node})
            done.add(node)

        for node in graph:
            visit(node, set())

    def check_log(self) -> None:
        """Per entity, versions 1, 2, 3… with nothing after its delete."""
        per: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in self.log:
            if e["type"].startswith("entity."):
                per.setdefault((e["data"]["entity"], e["data"]["entity_id"]), []).append(e)
        for events in per.values():
            assert [e["data"]["version"] for e in events] == list(range(1, len(events) + 1))
            assert all(e["type"] != "entity.deleted" for e in events[:-1])
            assert events[0]["type"] == "entity.created"


def approval_needed(change: ChangeRequest, cur: Entity | None) -> list[str]:
    """docs/conflicts.md, rule 4: the fields whose effect needs the couple's approval."""
    if change.entity is not EntityKind.BUDGET or change.actor.role is Role.COUPLE:
        return []
    before = {} if cur is None else cur.fields
    after = None if change.op is Op.DELETE else {**before, **change.fields}

    def amount(fields: dict[str, Any] | None, f: str) -> int:
        return (fields or {}).get(f) or 0

    amounts = ("estimated", "actual")
    sets = amounts if after is None else [f for f in amounts if f in change.fields]
    moved = [f for f in sets if abs(amount(after, f) - amount(before, f"approved_{f}")) > THRESHOLD]
    large = [f for f in amounts if max(amount(before, f), amount(after, f)) > THRESHOLD]
    if after is None:
        return moved + [f for f in large if f not in moved]
    flags = [f for f in ("paid", "approved") if f in change.fields]
    return moved + ([f for f in flags if change.fields[f] != bool(before.get(f))] if large else [])


def report(log: list[dict[str, Any]]) -> None:
    """What a history exercised (``pytest --hypothesis-show-statistics``)."""
    for e in log:
        reason = e["data"].get("reason") if e["type"] == "conflict.rejected" else None
        hypothesis.event(e["type"] + (f" ({reason})" if reason else ""))


def request(cid: str, actor: Actor, e: Edit, base: int | None) -> ChangeRequest:
    """The change the gateway would store for this edit (validated as it validates)."""
    kind, op = EntityKind(e.kind), Op(e.op)
    fields = {} if op is Op.DELETE else validate_fields(kind, op, e.fields)
    return ChangeRequest(
        client_id=cid,
        wedding_id="w",
        actor=actor,
        entity=kind,
        entity_id=e.entity_id,
        op=op,
        fields=fields,
        base_version=base,
        ts=0.0,
    )


class Client:
    def __init__(self, user: str, role: str) -> None:
        self.actor = Actor(user_id=user, role=Role(role))
        self.state: State = {}
        self.tombstones: dict[tuple[str, str], int] = {}
        self.cursor = 0

    def sync(self, log: list[dict[str, Any]]) -> None:
        for e in log[self.cursor :]:
            fold(self.state, self.tombstones, e)
        self.cursor = len(log)


@hypothesis.settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(history=histories(("tasks", "guests", "timeline", "budget"), 10, 60, engine_only=True))
def test_engine_histories_converge(history: History) -> None:
    model = Model(WeddingStatus(history.status))
    clients = [Client(f"u{i}", role) for i, role in enumerate(history.roles)]
    couple = clients[0].actor
    for n, edit in enumerate(history.prelude):
        model.apply(request(f"p{n}", couple, edit, None))
    for c in clients:
        c.sync(model.log)
    for n, step in enumerate(history.steps):
        if isinstance(step, Sync):
            clients[step.client].sync(model.log)
        elif isinstance(step, Decide):
            model.decide(step.pick, step.verdict, couple)
        elif isinstance(step, WeddingDay):
            model.status = WeddingStatus.WEDDING_DAY
        else:
            c = clients[step.client]
            model.apply(request(f"c{n}", c.actor, step, base_for(c.state, c.tombstones, step)))
    model.check_log()
    report(model.log)
    live = model.live()
    for c in clients:
        c.sync(model.log)
        assert without_empty(c.state) == live


# -- the real path ------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(
        settings, "conflicts", {"WEDSYNC_APPROVAL_THRESHOLD": str(THRESHOLD)}
    ):
        yield


def normal(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events' types and data, up to orders that follow how PostgreSQL returns rows: a
    ``changed`` list follows the stored fields' (jsonb) key order, and the double bookings
    one change reports follow the order of the timeline rows loaded."""
    out: list[dict[str, Any]] = []
    for e in events:
        data = dict(e["data"])
        if "changed" in data:
            data["changed"] = sorted(data["changed"])
        out.append({"type": e["type"], "data": data})
    runs: list[list[dict[str, Any]]] = []
    for e in out:
        if runs and e["type"] == runs[-1][-1]["type"] == "timeline.conflict.detected":
            runs[-1].append(e)
        else:
            runs.append([e])
    return [e for run in runs for e in sorted(run, key=lambda e: repr(e["data"]))]


@dataclass
class Sent:
    member: Member
    role: str
    cid: str
    edit: Edit
    base: int | None


async def play(m: Member, role: str, mine: list[Step], sent: list[Sent]) -> None:
    """One member's part of the history, sent without waiting for anyone else."""
    for step in mine:
        if isinstance(step, Sync):
            await m.settle()
        elif isinstance(step, Edit):
            base = base_for(m.state, m.tombstones, step)
            cid = await m.change(step.kind, step.entity_id, step.op, step.fields, base)
            sent.append(Sent(m, role, cid, step, base))
        await asyncio.sleep(0)  # let the others interleave


@hypothesis.settings(
    max_examples=15,
    deadline=None,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(("tasks", "guests", "timeline"), 8, 30))
async def test_members_on_two_gateways_converge(
    history: History,
    settings: Settings,
    gateways: list[str],
    conns: Connections,
    conflicts_worker: None,
) -> None:
    world = World(settings, gateways[0])
    await world.create()
    if history.status != "planning":
        async with httpx.AsyncClient(base_url=world.base) as c:
            r = await c.patch(
                f"/api/weddings/{world.wedding}",
                headers=world.auth(world.couple),
                json={"status": history.status},
            )
            assert r.status_code == 200, r.text
    users = [world.couple, *[await world.add(role) for role in history.roles[1:]]]
    members = [await join_member(world, gateways[i % 2], u) for i, u in enumerate(users)]
    try:
        sent: list[Sent] = []
        for edit in history.prelude:
            cid = await members[0].change(edit.kind, edit.entity_id, "create", edit.fields)
            sent.append(Sent(members[0], "couple", cid, edit, None))
        await quiesce(world, members)
        await asyncio.gather(
            *(
                play(
                    m,
                    history.roles[i],
                    [s for s in history.steps if not isinstance(s, Edit | Sync) or s.client == i],
                    sent,
                )
                for i, m in enumerate(members)
            )
        )
        seq = await quiesce(world, members)
        for s in sent:
            assert s.cid in s.member.acks, s.member.errors.get(s.cid)
        state = await wedding_state(world, world.couple)
        assert state["seq"] == seq
        entities = without_empty(state["entities"])
        assert without_empty(await stored_entities(conns, world.wedding)) == entities
        for m in members:
            mine = without_empty((await wedding_state(world, m.user))["entities"])
            assert without_empty(m.state) == mine == entities, m.user

        # the worker did what the pure engine does with the same changes in stream order
        model = Model(WeddingStatus(history.status))
        for s in sorted(sent, key=lambda s: s.member.acks[s.cid]):
            actor = Actor(user_id=s.member.user, role=Role(s.role))
            model.apply(request(s.cid, actor, s.edit, s.base), seq=s.member.acks[s.cid])
        model.check_log()
        report(model.log)
        assert without_empty(model.live()) == entities
        assert normal(members[0].events) == normal(model.log)
    finally:
        for m in members:
            await m.ws.close()
