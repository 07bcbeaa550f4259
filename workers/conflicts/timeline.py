"""Timeline rules: moves cascade to dependents, no dependency cycles, double bookings
reported."""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

from streams.changes import ChangeRequest
from streams.permissions import Channel
from streams.state import EntityKind
from workers.conflicts.outcome import (
    Audit,
    Emit,
    Entity,
    Outcome,
    View,
    entity_event,
    iso,
    parse_time,
    reject,
)

TL = EntityKind.TIMELINE


def moved(change: ChangeRequest, before: dict[str, Any], fields: dict[str, Any]) -> None:
    """Moving the start without giving an end moves the whole item (the end follows)."""
    if before and "start" in change.fields and "end" not in change.fields:
        delta = parse_time(fields["start"]) - parse_time(before["start"])
        fields["end"] = iso(parse_time(before["end"]) + delta)


def _cycle(start: str, graph: dict[str, list[str]]) -> bool:
    seen, todo = set(), list(graph.get(start, []))
    while todo:
        node = todo.pop()
        if node == start:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, []))
    return False


def after_timeline_change(
    change: ChangeRequest, seq: int, cur: Entity | None, new: Entity, view: View, out: Outcome
) -> Outcome | None:
    """Adds cascades and double-booking reports to ``out``; a rejection for a cycle."""
    items = {e.entity_id: e for e in view.live(TL)}
    items[new.entity_id] = new
    if "depends_on" in change.fields:
        graph = {i: list(e.fields.get("depends_on") or []) for i, e in items.items()}
        if _cycle(new.entity_id, graph):
            return reject(
                change, seq, "cycle", "depends_on would make a cycle", cur, ["depends_on"]
            )
    touched = [new]
    if cur is not None and new.fields["start"] != cur.fields["start"]:
        delta = parse_time(new.fields["start"]) - parse_time(cur.fields["start"])
        dependents: dict[str, list[str]] = {}
        for i, e in items.items():
            for dep in e.fields.get("depends_on") or []:
                dependents.setdefault(dep, []).append(i)
        shifted: list[str] = []
        queue, seen = deque([new.entity_id]), {new.entity_id}
        while queue:
            for i in sorted(dependents.get(queue.popleft(), [])):
                if i in seen:
                    continue
                seen.add(i)
                queue.append(i)
                touched.append(_shift(items, i, delta, change, seq, out))
                shifted.append(i)
        if shifted:
            out.events.append(
                Emit(
                    "timeline.cascaded",
                    Channel.TIMELINE,
                    {
                        "entity_id": new.entity_id,
                        "delta_seconds": delta.total_seconds(),
                        "shifted": shifted,
                        "change": {"id": change.client_id, "seq": seq, "by": change.actor.user_id},
                    },
                )
            )
    _double_bookings(touched, items, out)
    return None


def _shift(
    items: dict[str, Entity], i: str, delta: Any, change: ChangeRequest, seq: int, out: Outcome
) -> Entity:
    old = items[i]
    e = copy.deepcopy(old)
    e.version += 1
    e.updated_by = change.actor.user_id
    for f in ("start", "end"):
        e.fields[f] = iso(parse_time(old.fields[f]) + delta)
        e.field_versions[f], e.field_authors[f] = e.version, change.actor.user_id
    items[i] = e
    out.writes[(TL, i)] = e
    out.events.append(entity_event("entity.updated", e, change, seq, "cascade", ["start", "end"]))
    out.audits.append(
        Audit(
            e,
            "cascade",
            {f: old.fields[f] for f in ("start", "end")},
            {f: e.fields[f] for f in ("start", "end")},
        )
    )
    return e


def _double_bookings(touched: list[Entity], items: dict[str, Entity], out: Outcome) -> None:
    reported: set[tuple[str, str, str]] = set()
    for t in touched:
        a0, a1 = parse_time(t.fields["start"]), parse_time(t.fields["end"])
        for o in items.values():
            if o.entity_id == t.entity_id:
                continue
            if not (a0 < parse_time(o.fields["end"]) and parse_time(o.fields["start"]) < a1):
                continue
            for what in ("vendor_id", "location"):
                value = t.fields.get(what)
                if value is None or o.fields.get(what) != value:
                    continue
                x, y = sorted((t.entity_id, o.entity_id))
                if (x, y, what) in reported:
                    continue
                reported.add((x, y, what))
                out.events.append(
                    Emit(
                        "timeline.conflict.detected",
                        Channel.TIMELINE,
                        {
                            "items": [x, y],
                            "reason": "vendor" if what == "vendor_id" else "location",
                            what: value,
                        },
                    )
                )
