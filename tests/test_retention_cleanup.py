"""The retention cleanup job: expired sessions, presence roll-ups, the delivery log, consumed
marks and dead letters; the run log and its lock; the retention worker and CLI.

The services are shared by the whole session, so these tests backdate their own rows and
run the job on the real clock (other tests' rows are younger than every retention period);
only the dead-letter test moves the clock, since that stream holds nothing a later test needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from app.sessions.store import token_hash
from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import DEAD_LETTERS
from streams.subjects import dead_letter_subject
from tests.kits.world import World, connect, eventually, recv_type, worker_process
from workers.retention import CleanupJob, JobBusy, run_job
from workers.retention.jobs import Clock, Counts, _key, utcnow

pytestmark = pytest.mark.timeout(60)

_JOB_LOCK = 0x57EE  # workers.retention.jobs: pg_try_advisory_lock(class, job)


def cleanup(conns: Connections, settings: Settings, clock: Clock = utcnow) -> CleanupJob:
    return CleanupJob(conns.nc, conns.js, conns.pool, settings.retention, clock=clock)


def ago(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


async def api(world: World, method: str, path: str, user: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.base) as c:
        return await c.request(method, path, headers=world.auth(user), **kw)


# -- sessions ------------------------------------------------------------------------------


async def test_sessions_past_their_grace_are_deleted(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    grace = settings.retention.session_grace_days
    assert grace == 30
    planner, vendor, family, guest = [
        await world.add(role) for role in ("planner", "vendor", "family", "guest")
    ]
    tokens = {u: await world.join(u) for u in (world.couple, planner, vendor, family, guest)}
    wedding = uuid.UUID(world.wedding)
    # user: (created, last seen, expires, ended) in days ago (negative: in the future)
    shapes: dict[str, tuple[float, float, float, float | None]] = {
        world.couple: (100, 0, -1, None),  # opened long ago, kept alive by activity
        planner: (60, 41, grace + 10, None),  # expired long ago, never ended
        vendor: (60, grace + 10, grace - 10, grace + 10),  # ended long ago (expiry is younger)
        family: (10, 5, 3, 5),  # ended recently
        guest: (20, 10, 10, None),  # expired recently
    }
    ids: dict[str, uuid.UUID] = {}
    async with conns.pool.acquire() as conn:
        for user, (created, seen, expires, ended) in shapes.items():
            ids[user] = await conn.fetchval(
                """UPDATE sessions SET created_at = $2, last_seen_at = $3, expires_at = $4,
                          ended_at = $5, end_reason = CASE WHEN $5::timestamptz IS NULL
                                                           THEN NULL ELSE 'left' END
                   WHERE token_hash = $1 AND wedding_id = $6 RETURNING id""",
                token_hash(tokens[user]),
                ago(created),
                ago(seen),
                ago(expires),
                None if ended is None else ago(ended),
                wedding,
            )
            assert ids[user] is not None

    counts = await run_job(conns.pool, cleanup(conns, settings))
    assert set(counts) == {
        "sessions",
        "presence_days",
        "deliveries",
        "consumed_marks",
        "dead_letters",
    }
    assert counts["sessions"] >= 2  # ours; other tests keep theirs within the grace

    async with conns.pool.acquire() as conn:
        left = await conn.fetch("SELECT id, user_id FROM sessions WHERE wedding_id = $1", wedding)
    assert {r["user_id"] for r in left} == {world.couple, family, guest}
    assert {r["id"] for r in left} == {ids[world.couple], ids[family], ids[guest]}

    # the live session still opens the wedding's socket and is listed (and extended)
    ws = await connect(gateways[0], world.wedding, tokens[world.couple])
    try:
        welcome = await recv_type(ws, "welcome")
        assert welcome["type"] == "welcome"
    finally:
        await ws.close()
    r = await api(world, "GET", f"/api/collaboration/join/{world.wedding}", world.couple)
    assert r.status_code == 200, r.text
    assert [s["session_id"] for s in r.json()["sessions"]] == [str(ids[world.couple])]
    # the expired one was already refused and is now gone entirely
    r = await api(world, "GET", f"/api/collaboration/join/{world.wedding}", planner)
    assert r.status_code == 404


# -- presence roll-up ----------------------------------------------------------------------


def bits(minutes: range) -> str:
    on = set(minutes)
    return "".join("1" if i in on else "0" for i in range(1500))


async def analytics(world: World, first: dt.date, last: dt.date) -> dict[str, Any]:
    r = await api(
        world,
        "GET",
        f"/api/weddings/{world.wedding}/presence/analytics",
        world.couple,
        params={"from": first.isoformat(), "to": last.isoformat()},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def minutes(body: dict[str, Any]) -> dict[str, dict[str, tuple[int, int]]]:
    """date → user → (active, present)."""
    return {
        d["date"]: {m["user_id"]: (m["active_minutes"], m["present_minutes"]) for m in d["members"]}
        for d in body["days"]
    }


async def test_presence_minutes_roll_up_into_days(
    world: World, conns: Connections, settings: Settings
) -> None:
    detail = settings.retention.presence_detail_days
    planner = await world.add("planner")
    wedding = uuid.UUID(world.wedding)
    now = dt.datetime.now(dt.UTC)  # the job's clock too (the real time, held still)
    today = now.date()  # the wedding's zone is UTC
    # rolled up: days more than detail + 1 days back (a UTC day a day earlier than the
    # wedding's local day is surely over)
    old, older = today - dt.timedelta(days=detail + 10), today - dt.timedelta(days=detail + 2)
    edge = today - dt.timedelta(days=detail + 1)  # still inside the detail window
    recent = today - dt.timedelta(days=3)
    # (user, day, present minutes, active minutes)
    rows = [
        (world.couple, old, range(0, 600, 3), range(0, 600, 6)),  # 200 present, 100 active
        (planner, old, range(720, 760), range(720, 730)),  # 40, 10
        (planner, older, range(1439, 1500), range(0)),  # 61 (a DST day's 25th hour), 0
        (world.couple, edge, range(100, 130), range(100, 107)),  # 30, 7
        (world.couple, recent, range(60, 77), range(60, 65)),  # 17, 5
    ]
    async with conns.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO presence_minutes (wedding_id, user_id, day, present, active) "
            "VALUES ($1, $2, $3, $4::text::bit(1500), $5::text::bit(1500))",
            [(wedding, u, d, bits(p), bits(a)) for u, d, p, a in rows],
        )
    expected = {
        old.isoformat(): {world.couple: (100, 200), planner: (10, 40)},
        older.isoformat(): {planner: (0, 61)},
        edge.isoformat(): {world.couple: (7, 30)},
        recent.isoformat(): {world.couple: (5, 17)},
    }
    before = await analytics(world, old, today)
    assert minutes(before) == expected

    counts = await run_job(conns.pool, cleanup(conns, settings, clock=lambda: now))
    assert counts["presence_days"] >= 3

    async with conns.pool.acquire() as conn:
        detail_rows = await conn.fetch(
            "SELECT user_id, day FROM presence_minutes WHERE wedding_id = $1 ORDER BY day",
            wedding,
        )
        rolled = await conn.fetch(
            "SELECT user_id, day, present_minutes, active_minutes FROM presence_days "
            "WHERE wedding_id = $1 ORDER BY day, user_id",
            wedding,
        )
    assert [(r["user_id"], r["day"]) for r in detail_rows] == [
        (world.couple, edge),
        (world.couple, recent),
    ]
    assert sorted(
        (r["user_id"], r["day"], r["active_minutes"], r["present_minutes"]) for r in rolled
    ) == sorted([(world.couple, old, 100, 200), (planner, old, 10, 40), (planner, older, 0, 61)])
    after = await analytics(world, old, today)
    assert after == before  # the same days, members, roles and counts, now partly rolled up

    again = await run_job(conns.pool, cleanup(conns, settings, clock=lambda: now))
    assert again["presence_days"] == 0
    assert await analytics(world, old, today) == before
    async with conns.pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM presence_days WHERE wedding_id = $1", wedding)
            == 3
        )


# -- the delivery log and consumed marks ---------------------------------------------------


async def test_finished_deliveries_past_the_log_period_are_deleted(
    world: World, conns: Connections, settings: Settings
) -> None:
    log_days = settings.retention.delivery_log_days
    old = log_days + 10
    wedding = uuid.UUID(world.wedding)
    # name: (status, due, sent, created (days ago), attempts, deleted)
    cases: dict[str, tuple[str, float, float | None, float, int, bool]] = {
        "old_sent": ("sent", old, old, old, 1, True),
        "old_dead": ("dead", old - 5, None, old, 3, True),
        "old_skipped": ("skipped", old, None, old, 0, True),
        "old_pending": ("pending", old, None, old, 0, False),
        "old_failed": ("failed", old, None, old, 2, False),
        "old_sending": ("sending", old, None, old, 1, False),  # its dispatcher died mid-send
        "recent_sent": ("sent", 1, 1, 1, 1, False),
        "old_but_sent_lately": ("sent", old, 2, old, 2, False),  # a retried one, sent lately
    }
    ids: dict[str, int] = {}
    async with conns.pool.acquire() as conn, conn.transaction():
        for name, (status, due, sent, created, attempts, _) in cases.items():
            ids[name] = await conn.fetchval(
                """INSERT INTO deliveries (key, wedding_id, event_id, user_id, channel, category,
                                           status, attempts, due_at, sent_at, created_at)
                   VALUES ($1, $2, $3, $4, 'email', 'timeline', $5, $6, $7, $8, $9)
                   RETURNING id""",
                f"retention-{uuid.uuid4().hex}",
                wedding,
                f"ev-{name}",
                world.couple,
                status,
                attempts,
                ago(due),
                None if sent is None else ago(sent),
                ago(created),
            )
            await conn.executemany(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, result, error) "
                "VALUES ($1, $2, $3, $4, $5)",
                [
                    (
                        ids[name],
                        i,
                        ago(due),
                        "sent" if status == "sent" and i == attempts else "failed",
                        None if status == "sent" and i == attempts else "550",
                    )
                    for i in range(1, attempts + 1)
                ],
            )

    counts = await run_job(conns.pool, cleanup(conns, settings))
    assert counts["deliveries"] >= 3

    kept = {name for name, case in cases.items() if not case[-1]}
    async with conns.pool.acquire() as conn:
        left = await conn.fetch("SELECT id FROM deliveries WHERE wedding_id = $1", wedding)
        logged = await conn.fetch(
            "SELECT delivery_id, count(*) AS n FROM delivery_attempts "
            "WHERE delivery_id = ANY($1::bigint[]) GROUP BY delivery_id",
            list(ids.values()),
        )
    by_id = {v: k for k, v in ids.items()}
    assert {by_id[r["id"]] for r in left} == kept
    # the deleted ones' attempts went with them; the kept ones' are all there
    assert {by_id[r["delivery_id"]]: r["n"] for r in logged} == {
        name: cases[name][4] for name in kept if cases[name][4]
    }


async def test_consumed_marks_older_than_a_week_are_deleted(
    conns: Connections, settings: Settings, uid: str
) -> None:
    consumer = f"retention-test-{uid}"
    async with conns.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO worker_consumed (consumer, stream, stream_seq, consumed_at) "
            "VALUES ($1, 'WEDSYNC_EVENTS', $2, $3)",
            [(consumer, 1, ago(8)), (consumer, 2, ago(6.9)), (consumer, 3, ago(0))],
        )
    counts = await run_job(conns.pool, cleanup(conns, settings))
    assert counts["consumed_marks"] >= 1
    async with conns.pool.acquire() as conn:
        left = await conn.fetch(
            "SELECT stream_seq FROM worker_consumed WHERE consumer = $1 ORDER BY stream_seq",
            consumer,
        )
    assert [r["stream_seq"] for r in left] == [2, 3]


# -- dead letters --------------------------------------------------------------------------


async def dlq_count(conns: Connections, subject: str) -> int:
    info = await conns.js.stream_info(DEAD_LETTERS.name, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_dead_letters_past_their_days_are_purged(
    conns: Connections, settings: Settings, uid: str
) -> None:
    days = dt.timedelta(days=settings.retention.dead_letter_days)
    subject = dead_letter_subject(f"retention-test-{uid}")

    async def dead_letter(n: int) -> int:
        ack = await conns.js.publish(
            subject, json.dumps({"n": n}).encode(), stream=DEAD_LETTERS.name
        )
        return ack.seq

    for n in range(3):
        await dead_letter(n)
    mark = dt.datetime.now(dt.UTC)  # after the first three were stored, before the next two
    newer = [await dead_letter(n) for n in (3, 4)]

    # stored before `mark` is a dead letter's time: every older one goes, the newer two stay
    older = (await conns.js.stream_info(DEAD_LETTERS.name)).state
    counts = await run_job(conns.pool, cleanup(conns, settings, clock=lambda: mark + days))
    assert counts["dead_letters"] == older.messages - 2
    state = (await conns.js.stream_info(DEAD_LETTERS.name)).state
    assert (state.first_seq, state.messages) == (newer[0], 2)
    assert await dlq_count(conns, subject) == 2

    # a clock past the newest: everything stored so far is purged
    at = dt.datetime.now(dt.UTC) + days + dt.timedelta(seconds=3)
    counts = await run_job(conns.pool, cleanup(conns, settings, clock=lambda: at))
    assert counts["dead_letters"] == 2
    assert (await conns.js.stream_info(DEAD_LETTERS.name)).state.messages == 0

    # one given up on after the purge stays, on the real clock too
    last = await dead_letter(5)
    counts = await run_job(conns.pool, cleanup(conns, settings))
    assert counts["dead_letters"] == 0
    assert await dlq_count(conns, subject) == 1
    msg = await conns.js.get_msg(DEAD_LETTERS.name, last)
    assert msg.data is not None and json.loads(msg.data) == {"n": 5}


# -- the run log and its lock --------------------------------------------------------------


class GatedCleanup(CleanupJob):
    """The real cleanup job, paused (holding its lock) until the test lets it go."""

    def __init__(self, conns: Connections, settings: Settings) -> None:
        super().__init__(conns.nc, conns.js, conns.pool, settings.retention)
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def run(self, progress: Any) -> Counts:
        self.started.set()
        await self.release.wait()
        return await super().run(progress)


async def runs_since(conns: Connections, after: int) -> list[dict[str, Any]]:
    async with conns.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, job, started_at, finished_at, ok, counts, error FROM retention_runs "
            "WHERE id > $1 ORDER BY id",
            after,
        )
    return [dict(r) for r in rows]


async def last_run_id(conns: Connections) -> int:
    async with conns.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM retention_runs"))


async def test_one_run_at_a_time_and_the_run_log(conns: Connections, settings: Settings) -> None:
    start = await last_run_id(conns)

    # someone else (another replica) holds the job's lock: no run, and none logged
    async with conns.pool.acquire() as holder:
        assert await holder.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _JOB_LOCK, _key("cleanup")
        )
        try:
            with pytest.raises(JobBusy, match="cleanup"):
                await run_job(conns.pool, cleanup(conns, settings))
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1, $2)", _JOB_LOCK, _key("cleanup"))
    assert await runs_since(conns, start) == []

    # a run in progress: a second one is refused; the first is logged as running, then done
    gated = GatedCleanup(conns, settings)
    first = asyncio.create_task(run_job(conns.pool, gated))
    try:
        await asyncio.wait_for(gated.started.wait(), 10)
        with pytest.raises(JobBusy):
            await run_job(conns.pool, cleanup(conns, settings))
        [running] = await runs_since(conns, start)
        assert running["job"] == "cleanup" and running["finished_at"] is None
        assert running["ok"] is None and running["error"] is None
        gated.release.set()
        counts = await asyncio.wait_for(first, 20)
    finally:
        gated.release.set()
        if not first.done():
            first.cancel()
    [done] = await runs_since(conns, start)
    assert done["id"] == running["id"]
    assert done["ok"] is True and done["error"] is None
    assert done["finished_at"] >= done["started_at"]
    assert json.loads(done["counts"]) == counts
    assert set(counts) == {
        "sessions",
        "presence_days",
        "deliveries",
        "consumed_marks",
        "dead_letters",
    }

    # the lock went with the run: the next one runs (and is logged on its own row)
    await run_job(conns.pool, cleanup(conns, settings))
    assert [r["ok"] for r in await runs_since(conns, start)] == [True, True]


async def test_a_failed_run_is_logged(conns: Connections, uid: str) -> None:
    class Broken:
        name = f"broken-{uid}"

        async def run(self, progress: Any) -> Counts:
            raise RuntimeError("disk on fire")

    start = await last_run_id(conns)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await run_job(conns.pool, Broken())
    [run] = await runs_since(conns, start)
    assert run["job"] == f"broken-{uid}" and run["ok"] is False
    assert run["finished_at"] is not None and "disk on fire" in run["error"]
    assert json.loads(run["counts"]) == {}
    # and its lock was released
    async with conns.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _JOB_LOCK, _key(f"broken-{uid}")
        )
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", _JOB_LOCK, _key(f"broken-{uid}"))


# -- the worker and the CLI ----------------------------------------------------------------


async def test_retention_worker_schedules_and_stops_on_sigterm(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    env = {
        "WEDSYNC_LOG_LEVEL": "INFO",
        # 29 February: nothing runs during the test, and the schedule shows the settings
        "WEDSYNC_RETENTION_ARCHIVE_CRON": "5 4 29 2 *",
        "WEDSYNC_RETENTION_CLEANUP_CRON": "7 4 29 2 *",
    }
    err: list[str] = []

    def scheduled() -> dict[str, str]:
        err.append(capfd.readouterr().err)
        return dict(re.findall(r"retention job (\w+): next run (\S+ \S+)", "".join(err)))

    async with worker_process(settings, "retention", env) as proc:

        def started() -> bool:
            assert proc.returncode is None, f"exited {proc.returncode}: {''.join(err)}"
            return len(scheduled()) == 2

        try:
            await eventually(started, timeout=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker stderr: {''.join(err)!r}") from exc
        assert {job: at[:16] for job, at in scheduled().items()} == {
            "archive": "2028-02-29 04:05",
            "cleanup": "2028-02-29 04:07",
        }
        # it stays up (a service waiting for its schedule, not a one-shot run)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 1)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = await asyncio.wait_for(asyncio.shield(proc.wait()), 10)
        except TimeoutError:
            scheduled()
            raise AssertionError(f"still running 10 s after SIGTERM: {''.join(err)!r}") from None
        stopped_in = time.monotonic() - t0
    out = "".join(err) + capfd.readouterr().err
    assert rc == 0, out
    assert stopped_in < 5, (stopped_in, out)
    assert "Traceback" not in out and " ERROR " not in out


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        *args,
        env={**os.environ, **settings.to_env(), "WEDSYNC_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_retention_run_cli(conns: Connections, settings: Settings) -> None:
    start = await last_run_id(conns)
    rc, out, err = await cli(settings, "retention", "run", "cleanup")
    assert rc == 0, err
    line = out.strip().splitlines()[-1]
    m = re.fullmatch(
        r"sessions=(\d+) presence_days=(\d+) deliveries=(\d+) "
        r"consumed_marks=(\d+) dead_letters=(\d+)",
        line,
    )
    assert m, out
    [run] = await runs_since(conns, start)
    assert run["job"] == "cleanup" and run["ok"] is True
    assert json.loads(run["counts"]) == {
        k: int(v) for k, v in (kv.split("=") for kv in line.split())
    }

    rc, out, err = await cli(settings, "retention", "run", "nope")
    assert rc == 2
    assert "unknown job 'nope'" in err and out == ""
    assert await runs_since(conns, start) == [run]

    # held elsewhere: the CLI says so and exits 1
    async with conns.pool.acquire() as holder:
        assert await holder.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _JOB_LOCK, _key("cleanup")
        )
        try:
            rc, out, err = await cli(settings, "retention", "run", "cleanup")
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1, $2)", _JOB_LOCK, _key("cleanup"))
    assert rc == 1 and "already running" in err
