"""What an outage cost: everything the members were told, checked against what the system
holds once it is quiet again.

The promise (issue 17): every message acknowledged is in the stream once and reached every
member once; every change acknowledged was applied once (per entity, versions 1..N with no
gap and no repeat); every member's folded view is ``GET /state``; every mention made one
notification (and one email); nothing was dead-lettered; no process had to be restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.faults.system import Watched
from bench.faults.traffic import Send, Wedding
from streams.permissions import Channel, Role, can_read

ENTITY_EVENTS = ("entity.created", "entity.updated", "entity.deleted")
Check = Callable[[], Awaitable[bool]]
# seconds settle still waits once a process exited: longer than live delivery takes to
# come back after a NATS restart (~15 s), so what is reported missing is missing
EXITED_GRACE = 25.0


@dataclass
class Audit:
    outage: str
    messages_sent: int = 0
    messages_acked: int = 0
    messages_lost: list[str] = field(default_factory=list)  # acked, not in the stream
    messages_duplicated: list[str] = field(default_factory=list)  # in the stream twice or more
    changes_sent: int = 0
    changes_acked: int = 0
    changes_lost: list[str] = field(default_factory=list)  # acked, never applied
    changes_duplicated: list[str] = field(default_factory=list)  # applied twice or more
    changes_rejected: list[str] = field(default_factory=list)  # conflict.rejected
    versions_wrong: dict[str, list[int]] = field(default_factory=dict)  # entity -> versions
    unsettled: list[str] = field(default_factory=list)  # sends never answered
    refused: dict[str, int] = field(default_factory=dict)  # final error code -> sends
    deliveries_missing: dict[str, int] = field(default_factory=dict)  # member -> events
    deliveries_extra: dict[str, int] = field(default_factory=dict)  # member -> events
    unrecovered_resumes: int = 0
    views_differ: dict[str, str] = field(default_factory=dict)  # member -> first difference
    mentions: int = 0
    notifications_missing: int = 0
    notifications_duplicated: int = 0
    emails_missing: int | None = None  # None: no mail server in this run
    emails_duplicated: int | None = None
    dead_letters: int | None = None
    exited: list[str] = field(default_factory=list)  # processes no longer running
    recovered_in: float | None = None  # seconds from the restart until all was caught up
    recovery: dict[str, float] = field(default_factory=dict)  # part -> seconds (drill.py)
    settled: bool = False  # quiet before the deadline

    @property
    def lost(self) -> int:
        return (
            len(self.messages_lost)
            + len(self.changes_lost)
            + self.notifications_missing
            + (self.emails_missing or 0)
            + sum(self.deliveries_missing.values())
        )

    @property
    def duplicated(self) -> int:
        return (
            len(self.messages_duplicated)
            + len(self.changes_duplicated)
            + self.notifications_duplicated
            + (self.emails_duplicated or 0)
            + sum(self.deliveries_extra.values())
        )

    def problems(self) -> list[str]:
        """What broke the promise, one line each; empty when it held."""
        out = []
        if self.exited:
            out.append(f"processes exited (nobody restarts them): {', '.join(self.exited)}")
        if not self.settled:
            out.append("not quiet before the deadline")
        for name in (
            "messages_lost",
            "messages_duplicated",
            "changes_lost",
            "changes_duplicated",
            "changes_rejected",
            "unsettled",
        ):
            items = getattr(self, name)
            if items:
                out.append(f"{name.replace('_', ' ')}: {len(items)} ({', '.join(items[:5])})")
        for name in (
            "versions_wrong",
            "refused",
            "deliveries_missing",
            "deliveries_extra",
            "views_differ",
        ):
            if getattr(self, name):
                out.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        for name in (
            "unrecovered_resumes",
            "notifications_missing",
            "notifications_duplicated",
            "emails_missing",
            "emails_duplicated",
            "dead_letters",
        ):
            if getattr(self, name):
                out.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "problems": self.problems(),
        }


async def settle(
    system: Watched, wedding: Wedding, timeout: float, extra: Check | None = None
) -> bool:
    """Wait until every send was answered, every member caught up with the stream, every
    acknowledged change has its outcome and every mention its notification (and
    ``extra``); False at the deadline (at most EXITED_GRACE after a process exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if system.exited():  # what the others still deliver gets a little longer
            deadline = min(deadline, time.monotonic() + EXITED_GRACE)
        try:
            if await _quiet(wedding) and (extra is None or await extra()):
                return True
        except httpx.HTTPError:
            pass  # a service still away: not quiet
        await asyncio.sleep(0.25)
    return False


async def _quiet(wedding: Wedding) -> bool:
    sends = [s for m in wedding.members for s in m.sends]
    if any(not s.done for s in sends):
        return False
    history = await wedding.history()
    head = history[-1]["seq"] if history else 0
    if any(m.last_seq < head for m in wedding.members):
        return False
    applied = {e["event"]["data"]["change"]["id"] for e in history if _change_of(e["event"])}
    if any(s.kind == "change" and s.acked_at and s.id not in applied for s in sends):
        return False
    mentions = {e["event"]["id"] for e in history if _mentions(e["event"], wedding.aunt)}
    noticed = {n["event_id"] for n in await wedding.inbox()}
    return mentions <= noticed


def _change_of(event: dict[str, Any]) -> dict[str, Any] | None:
    data = event.get("data")
    change = data.get("change") if isinstance(data, dict) else None
    return change if isinstance(change, dict) and "id" in change else None


def _mentions(event: dict[str, Any], user: str) -> bool:
    return event["type"] == "message" and f"@{user}" in str(event["data"].get("text", ""))


async def audit(
    outage: str,
    wedding: Wedding,
    system: Watched,
    mails: Callable[[], list[tuple[str, str]]] | None = None,
) -> Audit:
    """Check the promise; ``mails``: (idempotency key, Message-ID) of each email the
    aunt's mailbox received, when there is a mail server."""
    a = Audit(outage)
    history = await wedding.history()
    sends = [s for m in wedding.members for s in m.sends]
    _messages(a, history, [s for s in sends if s.kind == "message"])
    _changes(a, history, [s for s in sends if s.kind == "change"])
    a.unsettled = [s.id for s in sends if not s.done]
    a.refused = dict(Counter(s.error for s in sends if s.error))
    stream_seqs = {e["seq"] for e in history}
    for m in wedding.members:
        role = Role(m.role)
        want = {
            e["seq"]
            for e in history
            if e["seq"] > m.start_seq and can_read(role, Channel(e["event"]["channel"]))
        }
        got = Counter(q for q, _ in m.received)
        if missing := len(want - set(got)):
            a.deliveries_missing[m.user] = missing
        if extra := len(set(got) - stream_seqs) + sum(c - 1 for c in got.values()):
            a.deliveries_extra[m.user] = extra
        a.unrecovered_resumes += m.unrecovered
        state = await wedding.state(m.user)
        if differs := _difference(m.state, state["entities"]):
            a.views_differ[m.user] = differs
    mention_events = [e["event"] for e in history if _mentions(e["event"], wedding.aunt)]
    a.mentions = len(mention_events)
    notes = Counter(n["event_id"] for n in await wedding.inbox())
    a.notifications_missing = sum(1 for e in mention_events if not notes[e["id"]])
    a.notifications_duplicated = sum(max(notes[e["id"]] - 1, 0) for e in mention_events)
    if mails is not None:
        _emails(a, mention_events, wedding, await wedding.deliveries(), mails())
    a.dead_letters = await system.dead_letters()
    a.exited = [f"{c.name} (pid {c.pid}, exit {c.proc.returncode})" for c in system.exited()]
    return a


def _messages(a: Audit, history: list[dict[str, Any]], sends: list[Send]) -> None:
    seqs: dict[str, list[int]] = {}  # ref -> the seqs holding it
    for e in history:
        if e["event"]["type"] == "message":
            seqs.setdefault(str(e["event"]["data"].get("ref")), []).append(e["seq"])
    a.messages_sent = len(sends)
    a.messages_acked = sum(1 for s in sends if s.acked_at)
    a.messages_lost = [s.id for s in sends if s.acked_at and s.seq not in seqs.get(s.id, [])]
    a.messages_duplicated = [s.id for s in sends if len(seqs.get(s.id, [])) > 1]


def _changes(a: Audit, history: list[dict[str, Any]], sends: list[Send]) -> None:
    outcomes: Counter[str] = Counter()
    versions: dict[str, list[int]] = {}
    rejected = set()
    for e in history:
        event = e["event"]
        change = _change_of(event)
        if event["type"] in ENTITY_EVENTS:
            versions.setdefault(event["data"]["entity_id"], []).append(event["data"]["version"])
        if change is None:
            continue
        if event["type"] == "conflict.rejected":
            rejected.add(change["id"])
        if event["type"] in (*ENTITY_EVENTS, "conflict.rejected"):
            outcomes[change["id"]] += 1
    a.changes_sent = len(sends)
    a.changes_acked = sum(1 for s in sends if s.acked_at)
    a.changes_lost = [s.id for s in sends if s.acked_at and not outcomes[s.id]]
    a.changes_duplicated = [s.id for s in sends if outcomes[s.id] > 1]
    a.changes_rejected = [s.id for s in sends if s.id in rejected]
    for entity, vs in versions.items():  # lost or repeated changes are counted above
        if vs != list(range(1, len(vs) + 1)):
            a.versions_wrong[entity] = vs


def _emails(
    a: Audit,
    mentions: list[dict[str, Any]],
    wedding: Wedding,
    deliveries: list[dict[str, Any]],
    mails: list[tuple[str, str]],
) -> None:
    """One email per mention. A second copy is allowed only where the delivery log shows
    an attempt interrupted inside the provider call, and only with the same Message-ID
    (the mailbox provider drops it): the guarantee docs/notifications.md gives."""
    keys = Counter(k for k, _ in mails)
    ids: dict[str, set[str]] = {}
    for k, mid in mails:
        ids.setdefault(k, set()).add(mid)
    interrupted = {
        d["event_id"]
        for d in deliveries
        if d["channel"] == "email" and any(t["result"] == "interrupted" for t in d["attempts"])
    }
    a.emails_missing = a.emails_duplicated = 0
    for e in mentions:
        key = f"{e['id']}:{wedding.aunt}:email"
        if not keys[key]:
            a.emails_missing += 1
        elif keys[key] > 1 and (e["id"] not in interrupted or len(ids[key]) > 1):
            a.emails_duplicated += keys[key] - 1


def _difference(folded: dict[str, Any], served: dict[str, Any]) -> str:
    """The first entity on which a member's folded view and ``/state`` differ."""
    mine = {k: v for k, v in folded.items() if v}
    theirs = {k: v for k, v in served.items() if v}
    for kind in sorted(set(mine) | set(theirs)):
        a, b = mine.get(kind, {}), theirs.get(kind, {})
        for eid in sorted(set(a) | set(b)):
            if a.get(eid) != b.get(eid):
                return f"{kind}/{eid}: folded {a.get(eid)} /state {b.get(eid)}"
    return ""
