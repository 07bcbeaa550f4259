"""The budget approval rule's arithmetic, on the pure engine (workers/conflicts/engine.py):
what needs a couple member's approval is the *effect* of a change — how far an amount ends
up from the value the couple last approved, a delete of a large line, ``paid``/``approved``
of one — not the size of one step. The same path through real sockets and a real worker is
in tests/test_conflict_rules.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.changes import ChangeRequest
from streams.permissions import Role, WeddingStatus
from streams.protocol import Actor
from streams.state import EntityKind, FieldError, Op, validate_fields
from workers.conflicts.engine import Rules, apply_change
from workers.conflicts.outcome import Entity, Outcome, View

T = 50_000  # the default WEDSYNC_APPROVAL_THRESHOLD
RULES = Rules(approval_threshold=T, approval_ttl=3600.0)
COUPLE = Actor(user_id="couple-1", role=Role.COUPLE)
PLANNER = Actor(user_id="planner-1", role=Role.PLANNER)
BUDGET = EntityKind.BUDGET
AMOUNTS = ("estimated", "actual")
FLAGS = ("paid", "approved")


@dataclass
class Line:
    """One budget line through the worker's loop, minus PostgreSQL and NATS: changes, the
    approvals they wait for, the couple's decisions."""

    row: Entity | None = None
    seq: int = 0
    pending: dict[str, ChangeRequest] = field(default_factory=dict)

    def change(self, actor: Actor, op: Op, fields: dict[str, Any] | None = None) -> Outcome:
        base = None if op is Op.CREATE else (self.row.version if self.row else 1)
        valid = {} if op is Op.DELETE else validate_fields(BUDGET, op, fields or {})
        self.seq += 1
        request = ChangeRequest(
            client_id=f"c{self.seq}",
            wedding_id="w",
            actor=actor,
            entity=BUDGET,
            entity_id="b",
            op=op,
            fields=valid,
            base_version=base,
            ts=0.0,
        )
        return self.apply(request, granted=False)

    def apply(self, request: ChangeRequest, granted: bool) -> Outcome:
        view = View([] if self.row is None else [copy.deepcopy(self.row)])
        status = WeddingStatus.PLANNING
        out = apply_change(request, self.seq, view, status, RULES, approved=granted)
        if (written := out.writes.get((BUDGET, "b"))) is not None:
            self.row = copy.deepcopy(written)
        if out.approval is not None:
            self.pending[out.approval.id] = out.approval.change
        return out

    def decide(self, approval_id: str, grant: bool) -> Outcome | None:
        held = self.pending.pop(approval_id)
        self.seq += 1
        return self.apply(held, granted=True) if grant else None

    @property
    def fields(self) -> dict[str, Any]:
        assert self.row is not None and not self.row.deleted
        return self.row.fields


def held(out: Outcome) -> list[str] | None:
    """The fields an approval was requested for, or None (not held)."""
    [*requested] = [e for e in out.events if e.type == "approval.requested"]
    if not requested:
        return None
    assert out.writes == {} and out.approval is not None, "a held change changes nothing"
    amounts: list[str] = requested[0].data["amounts"]
    return amounts


def applied(out: Outcome) -> bool:
    return any(e.type.startswith("entity.") for e in out.events)


def line(estimated: int, by: Actor = COUPLE, **more: Any) -> Line:
    b = Line()
    assert applied(b.change(by, Op.CREATE, {"category": "Venue", "estimated": estimated, **more}))
    return b


def test_twelve_steps_of_the_threshold_move_a_line_by_one_step_until_approved() -> None:
    b = line(100_000)
    assert b.fields["approved_estimated"] == 100_000  # the couple's own amount
    step = {"estimated": 150_000}
    outcomes = [b.change(PLANNER, Op.UPDATE, step)]
    for _ in range(11):
        step = {"estimated": b.fields["estimated"] + T}
        outcomes.append(b.change(PLANNER, Op.UPDATE, step))
    assert applied(outcomes[0]) and held(outcomes[0]) is None  # exactly the threshold
    assert all(held(o) == ["estimated"] for o in outcomes[1:])  # 100 000 since approval
    assert b.fields["estimated"] == 150_000 and b.fields["approved_estimated"] == 100_000
    # the couple grants one: its amount is the new approved value, one more step fits
    granted = b.decide(next(iter(b.pending)), grant=True)
    assert granted is not None and applied(granted)
    assert (b.fields["estimated"], b.fields["approved_estimated"]) == (200_000, 200_000)
    assert applied(b.change(PLANNER, Op.UPDATE, {"estimated": 250_000}))
    assert held(b.change(PLANNER, Op.UPDATE, {"estimated": 250_001})) == ["estimated"]


def test_moves_count_from_the_approved_value_in_both_directions() -> None:
    b = line(200_000, actual=10_000)
    for value in (160_000, 240_000, 150_000, 250_000):  # each within T of 200 000
        assert applied(b.change(PLANNER, Op.UPDATE, {"estimated": value})), value
    for value in (149_999, 250_001, 0):
        assert held(b.change(PLANNER, Op.UPDATE, {"estimated": value})) == ["estimated"]
    assert held(b.change(PLANNER, Op.UPDATE, {"actual": 60_001})) == ["actual"]
    both = b.change(PLANNER, Op.UPDATE, {"estimated": 0, "actual": 70_000})
    assert held(both) == ["estimated", "actual"]
    # an amount nobody approved counts from nothing: a line the planner created
    p = line(T, by=PLANNER)
    assert p.fields["approved_estimated"] is None and p.fields["approved_actual"] is None
    assert held(p.change(PLANNER, Op.UPDATE, {"estimated": T + 1})) == ["estimated"]
    new = Line().change(PLANNER, Op.CREATE, {"category": "x", "estimated": T + 1})
    assert held(new) == ["estimated"]  # paid/approved left at false: nothing to ask


def test_only_the_couple_sets_approved_values() -> None:
    b = line(100_000)
    b.change(PLANNER, Op.UPDATE, {"estimated": 140_000, "actual": 30_000, "description": "x"})
    assert (b.fields["approved_estimated"], b.fields["approved_actual"]) == (100_000, None)
    b.change(COUPLE, Op.UPDATE, {"description": "y"})  # not an amount: nothing approved
    assert (b.fields["approved_estimated"], b.fields["approved_actual"]) == (100_000, None)
    b.change(COUPLE, Op.UPDATE, {"actual": 35_000})  # the amount the couple sets
    assert (b.fields["approved_estimated"], b.fields["approved_actual"]) == (100_000, 35_000)
    b.change(PLANNER, Op.UPDATE, {"estimated": 130_000})
    b.change(COUPLE, Op.UPDATE, {"approved": True})  # the couple approves the whole line
    assert (b.fields["approved_estimated"], b.fields["approved_actual"]) == (130_000, 35_000)
    assert held(b.change(PLANNER, Op.UPDATE, {"estimated": 400_000})) == ["estimated"]
    [approval] = b.pending
    assert b.decide(approval, grant=False) is None  # denied: nothing moves
    assert (b.fields["estimated"], b.fields["approved_estimated"]) == (130_000, 130_000)


def test_a_client_cannot_send_approved_values() -> None:
    for op in (Op.CREATE, Op.UPDATE):
        with pytest.raises(FieldError, match="approved_estimated is kept by the server"):
            fields = {"category": "x", "estimated": 1, "approved_estimated": 10**9}
            validate_fields(BUDGET, op, fields)


DELETES = [
    (T + 1, None, T + 1, ["estimated"]),  # a large line
    (T, T + 1, T, ["actual"]),  # large by its actual amount
    (T, None, T, None),  # not large, and what is approved is within T of nothing
    (60_000, None, 20_000, ["estimated"]),  # large now, though approved small
    (45_000, None, 90_000, ["estimated"]),  # small now, but 90 000 was approved: all of it goes
]


@pytest.mark.parametrize(("estimated", "actual", "approved", "needs"), DELETES)
def test_deleting_a_large_line_needs_approval(
    estimated: int, actual: int | None, approved: int, needs: list[str] | None
) -> None:
    b = line(approved)
    if actual is not None:
        b.change(COUPLE, Op.UPDATE, {"actual": actual})
    b.change(PLANNER, Op.UPDATE, {"estimated": estimated})
    assert b.fields["estimated"] == estimated
    out = b.change(PLANNER, Op.DELETE)
    assert held(out) == needs
    if needs is not None:  # granted, it applies
        [approval] = b.pending
        out = b.decide(approval, grant=True) or Outcome()
    assert [e.type for e in out.events] == ["entity.deleted"]
    assert b.row is not None and b.row.deleted
    couple_deletes = line(T + 1).change(COUPLE, Op.DELETE)
    assert [e.type for e in couple_deletes.events] == ["entity.deleted"]


@pytest.mark.parametrize("flag", ["paid", "approved"])
def test_paid_and_approved_of_a_large_line_need_approval(flag: str) -> None:
    big, small = line(T + 1), line(T)
    assert held(big.change(PLANNER, Op.UPDATE, {flag: True})) == [flag]
    assert applied(small.change(PLANNER, Op.UPDATE, {flag: True}))
    assert small.fields["approved_estimated"] == T, "a planner's approved: true approves nothing"
    # a line the change itself makes large: the amount is within T, the flag is not
    grown = line(T).change(PLANNER, Op.UPDATE, {"estimated": T + 1, flag: True})
    assert held(grown) == [flag]
    assert applied(big.change(PLANNER, Op.UPDATE, {flag: False}))  # unchanged: nothing to ask
    assert applied(big.change(COUPLE, Op.UPDATE, {flag: True}))


# -- any sequence of steps ------------------------------------------------------------------

Step = tuple[str, Any, Any]

MOVERS = st.sampled_from(["planner", "planner", "planner", "couple"])
STEP = st.one_of(
    st.tuples(MOVERS, st.sampled_from(AMOUNTS), st.integers(-3 * T // 2, 3 * T // 2)),
    st.tuples(st.sampled_from(["planner", "couple"]), st.sampled_from(FLAGS), st.booleans()),
    st.tuples(st.just("decide"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from(["planner", "couple"]), st.none()),
)


def _amount(fields: dict[str, Any], name: str) -> int:
    return fields.get(name) or 0


START = st.tuples(
    st.sampled_from(["couple", "planner"]), st.integers(0, 3 * T), st.none() | st.integers(0, 2 * T)
)


@hypothesis.settings(max_examples=600, deadline=None, database=None)
@given(start=START, steps=st.lists(STEP, max_size=40))
def test_no_sequence_of_steps_moves_a_line_past_the_threshold_unapproved(
    start: tuple[str, int, int | None], steps: list[Step]
) -> None:
    """The couple's approved values are tracked here from what the couple did and granted
    (not read from the engine); any change by someone else is held exactly when its effect
    needs approval, and an applied one never leaves an amount more than the threshold from
    its approved value."""
    by, estimated, actual = start
    b = Line()
    author = COUPLE if by == "couple" else PLANNER
    b.change(author, Op.CREATE, {"category": "x", "estimated": estimated, "actual": actual})
    if b.row is None:  # the planner's create of a large line waits: the couple grants it
        assert by == "planner" and max(estimated, actual or 0) > T
        b.decide(next(iter(b.pending)), grant=True)
        by = "couple"
    assert b.row is not None
    approved = {f: (b.row.fields[f] or 0) if by == "couple" else 0 for f in AMOUNTS}
    requests: dict[str, ChangeRequest] = {}
    for who, what, value in steps:
        if b.row.deleted:
            break
        now = dict(b.row.fields)
        if who == "decide":
            if not b.pending:
                continue
            approval_id = sorted(b.pending)[what % len(b.pending)]
            change = requests.pop(approval_id)
            out = b.decide(approval_id, value)
            if out is not None and not b.row.deleted:
                _approve(approved, change.fields, b.row.fields)
        else:
            if who == "delete":
                actor, op, fields = COUPLE if what == "couple" else PLANNER, Op.DELETE, {}
            else:
                actor, op, fields = COUPLE if who == "couple" else PLANNER, Op.UPDATE, {what: value}
                if what in AMOUNTS:  # a step from where the amount is
                    fields = {what: max(0, _amount(now, what) + value)}
            out = b.change(actor, op, fields)
            expected = [] if actor is COUPLE else _needs(now, op, fields, approved)
            assert (held(out) or []) == expected, (now, op, fields, approved)
            if out.approval is not None:
                requests[out.approval.id] = out.approval.change
            elif actor is COUPLE and not b.row.deleted:
                _approve(approved, fields, b.row.fields)
            hypothesis.event("held" if out.approval is not None else "applied")
        if not b.row.deleted:  # never further from what the couple approved than T
            for f in AMOUNTS:
                assert abs(_amount(b.row.fields, f) - approved[f]) <= T, f
                assert (b.row.fields[f"approved_{f}"] or 0) == approved[f]


def _approve(approved: dict[str, int], change: dict[str, Any], now: dict[str, Any]) -> None:
    for f in AMOUNTS:
        if f in change or change.get("approved") is True:
            approved[f] = _amount(now, f)


def _needs(
    now: dict[str, Any], op: Op, change: dict[str, Any], approved: dict[str, int]
) -> list[str]:
    """The rule, as docs/conflicts.md states it."""
    after = {} if op is Op.DELETE else {**now, **change}
    sets = AMOUNTS if op is Op.DELETE else [f for f in AMOUNTS if f in change]
    moved = [f for f in sets if abs(_amount(after, f) - approved[f]) > T]
    large = [f for f in AMOUNTS if max(_amount(now, f), _amount(after, f)) > T]
    if op is Op.DELETE:
        return moved + [f for f in large if f not in moved]
    flags = [f for f in FLAGS if f in change and change[f] != now[f]]
    return moved + (flags if large else [])
