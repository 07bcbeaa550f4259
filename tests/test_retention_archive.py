"""The archive job on the real services: events past a wedding's hot retention move from
JetStream to PostgreSQL, and history, resume and the welcome read across the boundary as if
nothing had moved.

Every job here is limited to the test's own weddings (``only=``): other tests share the
stream and must keep their events. Times are split with JetStream's own stored timestamps
and an injected clock; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import sys
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from runtime.connections import Connections
from runtime.db import archive as archive_db
from streams.definitions import EVENTS
from streams.definitions import NOTIFICATIONS_CONSUMER as NOTIFICATIONS
from streams.subjects import wedding_wildcard
from tests.kits.world import World, connect, eventually, recv, recv_type, send
from workers.retention import ArchiveJob, run_job
from workers.retention.archive import cutoff
from workers.retention.jobs import utcnow

pytestmark = pytest.mark.asyncio

DAY = dt.timedelta(days=1)
MS = dt.timedelta(milliseconds=1)


# -- helpers -----------------------------------------------------------------------------


async def post(ws: ClientConnection, *items: tuple[str, str]) -> list[int]:
    """Send one message per (channel, id) from ``ws``; their seqs (from the acks), in order."""
    for channel, mid in items:
        await send(ws, type="message", id=mid, channel=channel, data={"id": mid})
    acks: dict[str, int] = {}
    while len(acks) < len(items):
        f = await recv(ws)
        assert f["type"] != "error", f
        if f["type"] == "ack":
            acks[f["id"]] = f["seq"]
    seqs = [acks[mid] for _, mid in items]
    assert seqs == sorted(seqs)
    return seqs


async def chat(ws: ClientConnection, *ids: str) -> list[int]:
    return await post(ws, *(("chat", i) for i in ids))


async def opened(
    base: str,
    world: World,
    user: str,
    after: int | None = None,
) -> tuple[ClientConnection, dict[str, Any]]:
    """A socket of ``user`` on the wedding, and its welcome frame."""
    ws = await connect(base, world.wedding, await world.join(user), after=after)
    return ws, await recv_type(ws, "welcome")


async def until_resumed(ws: ClientConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The event frames replayed before ``resumed``, and the ``resumed`` frame."""
    events = []
    while True:
        f = await recv(ws)
        assert f["type"] != "error", f
        if f["type"] == "event":
            events.append(f)
        elif f["type"] == "resumed":
            return events, f


async def stored_at(conns: Connections, seq: int) -> dt.datetime:
    """When JetStream stored ``seq``, by the server's clock."""
    time = (await conns.js.get_msg(EVENTS.name, seq)).time
    assert time is not None  # a stored message always has one; nats-py types it optional
    return time


async def split_after(conns: Connections, seq: int) -> dt.datetime:
    """An instant after JetStream stored ``seq`` and before anything stored from now on."""
    at = await stored_at(conns, seq) + MS
    await eventually(lambda: utcnow() > at + 2 * MS)  # the server's clock is this clock
    return at


async def stored(conns: Connections, seq: int) -> bytes | None:
    """The bytes JetStream holds for ``seq`` (None: not held)."""
    try:
        data = (await conns.js.get_msg(EVENTS.name, seq)).data
    except NotFoundError:
        return None
    return data or b""


async def held(conns: Connections, wedding: str) -> list[int]:
    """The seqs JetStream still holds of the wedding's events."""
    seqs: list[int] = []
    seq = 1
    while True:
        try:
            msg = await conns.js.get_msg(
                EVENTS.name, seq=seq, subject=wedding_wildcard(wedding), next=True
            )
        except NotFoundError:
            return seqs
        assert msg.seq is not None
        seqs.append(msg.seq)
        seq = msg.seq + 1


async def archived(conns: Connections, wedding: str) -> list[asyncpg.Record]:
    return await conns.pool.fetch(
        "SELECT seq, channel, stored_at, data, tableoid::regclass::text AS part "
        "FROM event_archive WHERE wedding_id = $1 ORDER BY seq",
        uuid.UUID(wedding),
    )


async def marks(conns: Connections, wedding: str) -> archive_db.Marks:
    async with conns.pool.acquire() as c:
        return await archive_db.marks(c, uuid.UUID(wedding))


def job(
    conns: Connections,
    settings: Settings,
    now: dt.datetime,
    *weddings: str,
    consumers: tuple[str, ...] = (),
    **retention: Any,
) -> ArchiveJob:
    return ArchiveJob(
        conns.nc,
        conns.js,
        conns.pool,
        dataclasses.replace(settings.retention, **retention),
        consumers=consumers,
        clock=lambda: now,
        only=[uuid.UUID(w) for w in weddings],
    )


def moved(counts: dict[str, int]) -> dict[str, int]:
    """The counts every archive run reports: weddings purged, events archived and purged."""
    return {k: counts[k] for k in ("weddings", "archived", "purged")}


async def archive(
    conns: Connections, settings: Settings, now: dt.datetime, *weddings: str, **retention: Any
) -> dict[str, int]:
    return moved(await run_job(conns.pool, job(conns, settings, now, *weddings, **retention)))


async def history(world: World, user: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(user),
            params={"after_seq": after, "limit": limit},
        )
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


async def paged(world: World, user: str, limit: int, after: int = 0) -> list[dict[str, Any]]:
    """Every event after ``after`` by following ``next_after_seq`` with pages of ``limit``."""
    events: list[dict[str, Any]] = []
    while True:
        page = await history(world, user, after, limit)
        assert len(page["events"]) <= limit
        events += page["events"]
        if page["next_after_seq"] is None:
            return events
        assert page["next_after_seq"] == page["events"][-1]["seq"]
        after = page["next_after_seq"]


async def patch_status(world: World, *statuses: str) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        for status in statuses:
            r = await c.patch(
                f"/api/weddings/{world.wedding}",
                headers=world.auth(world.couple),
                json={"status": status},
            )
            assert r.status_code == 200, r.text


async def completed_at(conns: Connections, wedding: str) -> dt.datetime:
    at = await conns.pool.fetchval(
        "SELECT completed_at FROM weddings WHERE id = $1", uuid.UUID(wedding)
    )
    assert isinstance(at, dt.datetime)
    return at


@dataclasses.dataclass
class Split:
    """A wedding's events on both sides of ``at``: ``old`` stored before, ``new`` after."""

    old: list[int]
    new: list[int]
    at: dt.datetime
    bytes: dict[int, bytes]


async def split_wedding(
    conns: Connections, ws: ClientConnection, old: list[tuple[str, str]], new: list[tuple[str, str]]
) -> Split:
    old_seqs = await post(ws, *old)
    at = await split_after(conns, old_seqs[-1])
    new_seqs = await post(ws, *new)
    assert await stored_at(conns, new_seqs[0]) > at
    raw = {s: await stored(conns, s) for s in old_seqs + new_seqs}
    return Split(old_seqs, new_seqs, at, {s: b for s, b in raw.items() if b is not None})


CHAT_AND_BUDGET_OLD = [
    ("chat", "a1"),
    ("budget", "a2"),
    ("chat", "a3"),
    ("budget", "a4"),
    ("chat", "a5"),
]
CHAT_AND_BUDGET_NEW = [("chat", "b1"), ("budget", "b2"), ("chat", "b3")]


# -- 1. what moves -----------------------------------------------------------------------


async def test_archive_moves_exactly_the_events_stored_before_the_cutoff(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    other = World(settings, gateways[0])  # another wedding writing in between: untouched
    await other.create()
    ws, _ = await opened(gateways[0], world, world.couple)
    ws2, _ = await opened(gateways[0], other, other.couple)
    try:
        a = await chat(ws, "a1", "a2")
        others = await chat(ws2, "x1")
        a += await chat(ws, "a3", "a4")
        before = {s: await stored(conns, s) for s in a}
        at = await split_after(conns, a[-1])
        b = await chat(ws, "b1", "b2", "b3")
        others += await chat(ws2, "x2")

        now = at + 90 * DAY  # the default hot retention: the cutoff is ``at``
        assert cutoff(settings.retention, now, None, None) == at
        counts = await archive(conns, settings, now, world.wedding)
        assert counts == {"weddings": 1, "archived": len(a), "purged": len(a)}

        rows = await archived(conns, world.wedding)
        assert [r["seq"] for r in rows] == a
        assert all(bytes(r["data"]) == before[r["seq"]] for r in rows)  # byte for byte
        assert {r["channel"] for r in rows} == {"chat"}
        for r in rows:
            assert r["stored_at"] < at
            assert r["part"] == archive_db.partition_name(r["stored_at"].astimezone(dt.UTC).date())
        assert [await stored(conns, s) for s in a] == [None] * len(a)
        assert await held(conns, world.wedding) == b
        assert await held(conns, other.wedding) == others  # not archived, not purged
        assert await archived(conns, other.wedding) == []
        assert await marks(conns, world.wedding) == archive_db.Marks(
            purged_upto=b[0] - 1, last_seq=a[-1], archived=len(a)
        )

        run = await conns.pool.fetchrow(
            "SELECT ok, counts, error, finished_at FROM retention_runs "
            "WHERE job = 'archive' ORDER BY id DESC LIMIT 1"
        )
        assert run is not None
        assert run["ok"] is True and run["error"] is None and run["finished_at"] is not None
        assert moved(json.loads(run["counts"])) == counts

        # a rerun moves nothing
        again = await archive(conns, settings, now, world.wedding)
        assert again == {"weddings": 0, "archived": 0, "purged": 0}
        assert [r["seq"] for r in await archived(conns, world.wedding)] == a
        assert await held(conns, world.wedding) == b
    finally:
        await ws.close()
        await ws2.close()


# -- 2. history across the boundary ------------------------------------------------------


async def test_history_reads_across_the_archive_boundary(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    guest = await world.add("guest")  # reads chat, not budget
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        s = await split_wedding(conns, ws, CHAT_AND_BUDGET_OLD, CHAT_AND_BUDGET_NEW)
    finally:
        await ws.close()
    everything = s.old + s.new
    chat_seqs = [
        q
        for q, (ch, _) in zip(everything, CHAT_AND_BUDGET_OLD + CHAT_AND_BUDGET_NEW, strict=True)
        if ch == "chat"
    ]
    before = await history(world, world.couple)
    guest_before = await history(world, guest)
    assert [e["seq"] for e in before["events"]] == everything
    assert [e["seq"] for e in guest_before["events"]] == chat_seqs

    counts = await archive(conns, settings, s.at + 90 * DAY, world.wedding)
    assert counts["archived"] == len(s.old) and await held(conns, world.wedding) == s.new

    for base in gateways:  # any process
        w = World(settings, base)
        w.wedding, w.couple = world.wedding, world.couple
        after = await history(w, world.couple)
        assert after == before  # same events, same content, same head
        assert after["last_seq"] == s.new[-1] and after["next_after_seq"] is None
        assert [e["event"] for e in after["events"]] == [json.loads(s.bytes[q]) for q in everything]
        for limit in (1, 2, 3, 1000):
            assert await paged(w, world.couple, limit) == before["events"]
        # from inside the archived range, and from exactly the boundary
        assert await paged(w, world.couple, 2, after=s.old[1]) == before["events"][2:]
        assert await paged(w, world.couple, 2, after=s.old[-1]) == before["events"][len(s.old) :]
        # the guest still sees only what it may read, archived or not
        assert await history(w, guest) == guest_before
        assert await paged(w, guest, 1) == guest_before["events"]
        assert [e["event"]["channel"] for e in guest_before["events"]] == ["chat"] * len(chat_seqs)


# -- 3. resume across the boundary -------------------------------------------------------


async def test_resume_replays_archived_and_held_events_each_once(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    family = await world.add("family")  # reads chat, not budget
    a, welcome = await opened(gateways[0], world, world.couple)
    b: ClientConnection | None = None
    f: ClientConnection | None = None
    try:
        start, epoch = welcome["last_seq"], welcome["epoch"]
        s = await split_wedding(conns, a, CHAT_AND_BUDGET_OLD, CHAT_AND_BUDGET_NEW)
        counts = await archive(conns, settings, s.at + 90 * DAY, world.wedding)
        assert counts["purged"] == len(s.old) and await held(conns, world.wedding) == s.new
        everything = s.old + s.new

        # from the welcome taken before any message, on the other process
        b, _ = await opened(gateways[1], world, world.couple, after=start)
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == everything
        assert [e["event"] for e in events] == [json.loads(s.bytes[q]) for q in everything]
        assert resumed == {
            "type": "resumed",
            "after_seq": start,
            "last_seq": s.new[-1],
            "recovered": True,
            "epoch": epoch,
        }
        # from inside the archived range, at the boundary, and from the head
        for after in (s.old[0], s.old[2], s.old[-1], s.new[0], s.new[-1]):
            await send(b, type="resume", after_seq=after, epoch=epoch)
            events, resumed = await until_resumed(b)
            assert [e["seq"] for e in events] == [q for q in everything if q > after]
            assert resumed["recovered"] is True and resumed["last_seq"] == s.new[-1]

        # a member who may not read budget gets the rest, in order, from the archive too
        f, _ = await opened(gateways[1], world, family, after=start)
        events, resumed = await until_resumed(f)
        kinds = dict(zip(everything, CHAT_AND_BUDGET_OLD + CHAT_AND_BUDGET_NEW, strict=True))
        assert [e["seq"] for e in events] == [q for q in everything if kinds[q][0] == "chat"]
        assert resumed["recovered"] is True

        # and live from there: the next event once, nothing older again
        (live,) = await chat(a, "c1")
        for reader in (b, f):
            got = await recv_type(reader, "event")
            assert got["seq"] == live
    finally:
        for ws in (a, b, f):
            if ws is not None:
                await ws.close()


async def test_resume_and_welcome_once_jetstream_holds_none_of_the_wedding(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    a, welcome = await opened(gateways[0], world, world.couple)
    b: ClientConnection | None = None
    try:
        start, epoch = welcome["last_seq"], welcome["epoch"]
        old = await chat(a, "a1", "a2", "a3")
        at = await split_after(conns, old[-1])
        raw = {q: await stored(conns, q) for q in old}
        counts = await archive(conns, settings, at + 90 * DAY, world.wedding)
        assert counts == {"weddings": 1, "archived": 3, "purged": 3}
        assert await held(conns, world.wedding) == []
        assert (await marks(conns, world.wedding)).purged_upto == old[-1]
        # JetStream's first seq moves past every archived event (here with everything older,
        # as a stream purge by limits would): only the archive can say nothing was lost
        assert await conns.js.purge_stream(EVENTS.name, seq=old[-1] + 1)
        assert (await conns.js.stream_info(EVENTS.name)).state.first_seq > old[-1]

        # the history head and a new socket's welcome are the archived head, not 0 (the
        # second process has no room open for this wedding: it reads the head afresh)
        assert (await history(world, world.couple))["last_seq"] == old[-1]
        b, welcome_b = await opened(gateways[1], world, world.couple, after=start)
        assert welcome_b["last_seq"] == old[-1]
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == old
        assert [e["event"] for e in events] == [json.loads(raw[q] or b"") for q in old]
        assert resumed == {
            "type": "resumed",
            "after_seq": start,
            "last_seq": old[-1],
            "recovered": True,
            "epoch": epoch,
        }
        for after in (old[0], old[-1]):
            await send(b, type="resume", after_seq=after)
            events, resumed = await until_resumed(b)
            assert [e["seq"] for e in events] == [q for q in old if q > after]
            assert resumed["recovered"] is True and resumed["last_seq"] == old[-1]
        # beyond the archived head is not a position this wedding reached
        await send(b, type="resume", after_seq=old[-1] + 1000)
        events, resumed = await until_resumed(b)
        assert events == [] and resumed["recovered"] is False

        # a new event after the archived ones: live once, and replayed after the archive
        (new,) = await chat(a, "n1")
        assert (await recv_type(b, "event"))["seq"] == new
        await send(b, type="resume", after_seq=start)
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == [*old, new]
        assert resumed["recovered"] is True and resumed["last_seq"] == new
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_a_wedding_with_nothing_archived_resumes_recovered_when_the_stream_head_moved(
    gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """``recovered`` is true when JetStream holds everything after ``after_seq``. Archiving
    routinely moves the stream's first seq (the oldest events, at its head, are the ones
    archived) past a new wedding's welcome position 0; a wedding that began after the
    purged seqs (``events_from``, the stream's head at its creation) lost nothing and must
    resume with ``recovered: true``, or its clients reload state for nothing. (The stream
    also holds other tests' older events; a purge of those stands in for their being
    archived, then an older wedding is archived for real.)"""
    older = World(settings, gateways[0])
    await older.create()
    o, _ = await opened(gateways[0], older, older.couple)
    a: ClientConnection | None = None
    b: ClientConnection | None = None
    try:
        first = await chat(o, "o1")
        assert await conns.js.purge_stream(EVENTS.name, seq=first[0])
        old = first + await chat(o, "o2")
        world = World(settings, gateways[0])  # begins after the older wedding's events
        await world.create()
        a, welcome = await opened(gateways[0], world, world.couple)
        assert welcome["last_seq"] == 0  # a new wedding
        at = await split_after(conns, old[-1])
        mine = await chat(a, "m1", "m2")
        assert (await archive(conns, settings, at + 90 * DAY, older.wedding))["purged"] == 2
        assert (await conns.js.stream_info(EVENTS.name)).state.first_seq == mine[0]
        assert await held(conns, world.wedding) == mine  # this wedding lost nothing

        b, _ = await opened(gateways[1], world, world.couple, after=0)
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == mine
        assert resumed["recovered"] is True, resumed
    finally:
        for ws in (o, a, b):
            if ws is not None:
                await ws.close()


async def test_a_wedding_older_than_a_purge_it_cannot_account_for_resumes_unrecovered(
    world: World, gateways: list[str], conns: Connections
) -> None:
    """The other side of the rule: a wedding that existed when events below the stream's
    first seq were removed without the archive job (an operator's purge) may have lost
    some, so a resume from before them says ``recovered: false``."""
    a, _ = await opened(gateways[0], world, world.couple)
    b: ClientConnection | None = None
    try:
        mine = await chat(a, "x1")
        assert await conns.js.purge_stream(EVENTS.name, seq=mine[0] + 1)  # not archived
        later = await chat(a, "x2")
        b, _ = await opened(gateways[1], world, world.couple, after=0)
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == later
        assert resumed["recovered"] is False, resumed
    finally:
        for ws in (a, b):
            if ws is not None:
                await ws.close()


# -- 4. reruns, per-wedding retention, completed weddings, batches -----------------------


async def test_per_wedding_hot_days_moves_the_cutoff(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    longer = World(settings, gateways[0])
    await longer.create()
    ws, _ = await opened(gateways[0], world, world.couple)
    ws2, _ = await opened(gateways[0], longer, longer.couple)
    try:
        short_seqs = await chat(ws, "s1", "s2")
        long_seqs = await chat(ws2, "l1", "l2")
    finally:
        await ws.close()
        await ws2.close()
    now = utcnow()

    async def set_hot_days(w: World, days: int | None) -> None:
        await conns.pool.execute(
            "UPDATE weddings SET hot_days = $2 WHERE id = $1", uuid.UUID(w.wedding), days
        )

    # a day later the default (90 days) keeps everything hot; a one-day wedding moves
    soon = now + DAY + dt.timedelta(minutes=1)
    assert await archive(conns, settings, soon, world.wedding) == {
        "weddings": 0,
        "archived": 0,
        "purged": 0,
    }
    await set_hot_days(world, 1)
    assert await archive(conns, settings, soon, world.wedding) == {
        "weddings": 1,
        "archived": 2,
        "purged": 2,
    }
    assert [r["seq"] for r in await archived(conns, world.wedding)] == short_seqs
    assert await held(conns, world.wedding) == []

    # 100 days later the default would move them; a 200-day wedding keeps them hot
    await set_hot_days(longer, 200)
    later = now + 100 * DAY
    assert (await archive(conns, settings, later, longer.wedding))["archived"] == 0
    assert await held(conns, longer.wedding) == long_seqs
    assert (await archive(conns, settings, now + 201 * DAY, longer.wedding))["archived"] == 2
    assert await held(conns, longer.wedding) == []

    with pytest.raises(asyncpg.CheckViolationError):  # 1..3650 days
        await set_hot_days(world, 0)


async def test_a_completed_wedding_is_archived_after_completed_days(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        seqs = await chat(ws, "c1", "c2", "c3")
    finally:
        await ws.close()
    month = utcnow() + 31 * DAY  # within the default 90 hot days: stays while planning
    assert (await archive(conns, settings, month, world.wedding))["archived"] == 0
    await patch_status(world, "wedding_day", "completed")
    done = await completed_at(conns, world.wedding)
    assert done >= await stored_at(conns, seqs[-1])

    after = done + settings.retention.after_completed_days * DAY + dt.timedelta(minutes=1)
    counts = await archive(conns, settings, after, world.wedding)
    assert counts == {"weddings": 1, "archived": 3, "purged": 3}
    assert [r["seq"] for r in await archived(conns, world.wedding)] == seqs
    assert await held(conns, world.wedding) == []
    assert [e["seq"] for e in (await history(world, world.couple))["events"]] == seqs


async def test_a_recently_completed_wedding_keeps_its_events_hot(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """README: RETENTION_AFTER_COMPLETED_DAYS (30) are the "days after a wedding is
    `completed` when all its events are archived": ten days after completion, events a few
    days old are neither past the 90 hot days nor past the 30 days."""
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        seqs = await chat(ws, "r1", "r2")
    finally:
        await ws.close()
    await patch_status(world, "wedding_day", "completed")
    done = await completed_at(conns, world.wedding)
    counts = await archive(conns, settings, done + 10 * DAY, world.wedding)
    assert counts["archived"] == 0, f"archived 10 days after completion: {counts}"
    assert await held(conns, world.wedding) == seqs


async def test_small_batches_give_the_same_result(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        s = await split_wedding(
            conns, ws, [("chat", f"o{i}") for i in range(7)], [("chat", f"n{i}") for i in range(3)]
        )
    finally:
        await ws.close()
    before = await history(world, world.couple)
    now = s.at + 90 * DAY
    counts = await archive(conns, settings, now, world.wedding, archive_batch=3)
    assert counts == {"weddings": 1, "archived": 7, "purged": 7}  # batches of 3, 3, 1
    rows = await archived(conns, world.wedding)
    assert [r["seq"] for r in rows] == s.old
    assert [bytes(r["data"]) for r in rows] == [s.bytes[q] for q in s.old]
    assert await held(conns, world.wedding) == s.new
    assert await marks(conns, world.wedding) == archive_db.Marks(s.new[0] - 1, s.old[-1], 7)
    assert await history(world, world.couple) == before
    assert await archive(conns, settings, now, world.wedding, archive_batch=3) == {
        "weddings": 0,
        "archived": 0,
        "purged": 0,
    }

    # the remaining 3 later: exactly one full batch, then a read that finds nothing
    counts = await archive(conns, settings, utcnow() + 91 * DAY, world.wedding, archive_batch=3)
    assert counts == {"weddings": 1, "archived": 3, "purged": 3}
    assert [r["seq"] for r in await archived(conns, world.wedding)] == s.old + s.new
    assert await held(conns, world.wedding) == []
    assert await history(world, world.couple) == before


async def test_a_crash_between_commit_and_purge_is_finished_by_the_rerun(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """The job's step 2 committed (rows and marks) but its purge never ran: readers show
    each event once, and the next run only purges."""
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        s = await split_wedding(conns, ws, [("chat", "a1"), ("chat", "a2")], [("chat", "b1")])
    finally:
        await ws.close()
    before = await history(world, world.couple)
    wid = uuid.UUID(world.wedding)
    # the rows as the job reads them: the stored time from the delivered message's metadata
    sub = await conns.js.subscribe(
        wedding_wildcard(world.wedding),
        stream=EVENTS.name,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=s.old[0]
        ),
    )
    try:
        msgs = [await sub.next_msg(timeout=5) for _ in s.old]
    finally:
        await sub.unsubscribe()
    rows = [
        archive_db.Archived(wid, m.metadata.sequence.stream, "chat", m.metadata.timestamp, m.data)
        for m in msgs
    ]
    assert [r.seq for r in rows] == s.old and [r.data for r in rows] == [s.bytes[q] for q in s.old]
    async with conns.pool.acquire() as c, c.transaction():
        assert await archive_db.insert(c, rows) == 2
        await archive_db.advance(c, wid, purged_upto=s.new[0] - 1, last_seq=s.old[-1], moved=2)
    assert await held(conns, world.wedding) == s.old + s.new  # in both stores now

    assert await history(world, world.couple) == before  # each once
    b, _ = await opened(gateways[1], world, world.couple, after=0)
    try:
        events, resumed = await until_resumed(b)
        assert [e["seq"] for e in events] == s.old + s.new and resumed["recovered"] is True
    finally:
        await b.close()

    counts = await archive(conns, settings, s.at + 90 * DAY, world.wedding)
    assert counts == {"weddings": 1, "archived": 0, "purged": 2}
    assert await held(conns, world.wedding) == s.new
    assert await marks(conns, world.wedding) == archive_db.Marks(s.new[0] - 1, s.old[-1], 2)
    assert await history(world, world.couple) == before


async def test_events_a_consumer_has_not_finished_stay_in_jetstream(
    world: World, gateways: list[str], conns: Connections, settings: Settings, uid: str
) -> None:
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        seqs = await chat(ws, "f1", "f2", "f3", "f4")
    finally:
        await ws.close()
    durable = f"archive-floor-{uid}"
    await conns.js.add_consumer(
        EVENTS.name,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=wedding_wildcard(world.wedding),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
        ),
    )
    sub = await conns.js.pull_subscribe_bind(durable, stream=EVENTS.name)
    try:
        far = utcnow() + 365 * DAY  # every event is old enough

        async def run(held_back: int) -> dict[str, int]:
            counts = await run_job(
                conns.pool,
                job(conns, settings, far, world.wedding, consumers=(durable, "no-such-durable")),
            )
            assert counts["held_back"] == held_back  # weddings kept for a lagging consumer
            return moved(counts)

        assert (await run(held_back=1))["archived"] == 0  # the consumer has seen none of them
        msgs = await sub.fetch(2, timeout=5)
        assert [m.metadata.sequence.stream for m in msgs] == seqs[:2]
        for m in msgs:
            await m.ack_sync()
        assert await run(held_back=1) == {"weddings": 1, "archived": 2, "purged": 2}
        assert await held(conns, world.wedding) == seqs[2:]
        for m in await sub.fetch(2, timeout=5):
            await m.ack_sync()
        assert await run(held_back=0) == {"weddings": 1, "archived": 2, "purged": 2}  # caught up
        assert [r["seq"] for r in await archived(conns, world.wedding)] == seqs
    finally:
        await sub.unsubscribe()
        await conns.js.delete_consumer(EVENTS.name, durable)


# -- 5. monthly partitions ---------------------------------------------------------------


async def test_archived_rows_go_to_the_partition_of_their_utc_month(conns: Connections) -> None:
    """Storage level only: JetStream stamps events with the server's clock, so events
    stored on both sides of a month's end cannot be made on demand end to end (the job test
    above checks the partition of real events). Rows a second apart across 2031-01/02, one
    written with a +01:00 offset, in a transaction that is rolled back."""
    wid = uuid.uuid4()
    utc = dt.UTC
    plus1 = dt.timezone(dt.timedelta(hours=1))
    rows = [
        archive_db.Archived(
            wid, 1, "chat", dt.datetime(2031, 1, 31, 23, 59, 59, tzinfo=utc), b"{}"
        ),
        archive_db.Archived(wid, 2, "chat", dt.datetime(2031, 2, 1, 0, 30, tzinfo=plus1), b"{}"),
        archive_db.Archived(wid, 3, "chat", dt.datetime(2031, 2, 1, 0, 0, tzinfo=utc), b"{}"),
    ]
    async with conns.pool.acquire() as c:
        tx = c.transaction()
        await tx.start()
        try:
            assert await archive_db.insert(c, rows) == 3
            assert await archive_db.insert(c, rows) == 0
            parts = await c.fetch(
                "SELECT seq, tableoid::regclass::text AS part FROM event_archive "
                "WHERE wedding_id = $1 ORDER BY seq",
                wid,
            )
            assert [(r["seq"], r["part"]) for r in parts] == [
                (1, "event_archive_y2031m01"),
                (2, "event_archive_y2031m01"),
                (3, "event_archive_y2031m02"),
            ]
        finally:
            await tx.rollback()


# -- 6. the CLI --------------------------------------------------------------------------


async def cli(settings: Settings, wedding: str, env: dict[str, str]) -> tuple[int, str, str]:
    child_env = {**settings.to_env(), "WEDSYNC_LOG_LEVEL": "WARNING", **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        "retention",
        "run",
        "archive",
        "--wedding",
        wedding,
        env={**os.environ, **child_env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def printed_counts(out: str) -> dict[str, int]:
    last = out.strip().splitlines()[-1]
    return moved({k: int(v) for k, v in (item.split("=") for item in last.split())})


async def test_cli_archives_one_completed_wedding(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    # the CLI spares what the notifications worker has yet to consume; a durable left behind
    # by another module's (stopped) worker would hold everything back
    try:
        info = await conns.js.consumer_info(EVENTS.name, NOTIFICATIONS.durable)
    except NotFoundError:
        pass
    else:
        if info.num_pending or info.num_ack_pending:
            await conns.js.delete_consumer(EVENTS.name, NOTIFICATIONS.durable)
    ws, _ = await opened(gateways[0], world, world.couple)
    try:
        seqs = await chat(ws, "k1", "k2", "k3")
    finally:
        await ws.close()

    code, out, err = await cli(settings, world.wedding, {})
    assert code == 0, err
    assert printed_counts(out) == {"weddings": 0, "archived": 0, "purged": 0}  # fresh events
    assert await held(conns, world.wedding) == seqs

    await patch_status(world, "wedding_day", "completed")
    code, out, err = await cli(
        settings, world.wedding, {"WEDSYNC_RETENTION_AFTER_COMPLETED_DAYS": "0"}
    )
    assert code == 0, err
    assert printed_counts(out) == {"weddings": 1, "archived": 3, "purged": 3}
    assert [r["seq"] for r in await archived(conns, world.wedding)] == seqs
    assert await held(conns, world.wedding) == []
    assert [e["seq"] for e in (await history(world, world.couple))["events"]] == seqs

    code, out, err = await cli(settings, str(uuid.uuid4()), {})  # no such wedding: nothing
    assert code == 0, err
    assert printed_counts(out) == {"weddings": 0, "archived": 0, "purged": 0}
