"""`wedsync retention run archive` SIGKILLed mid-run, again and again, then run to the end:
every event of the wedding ends up in `event_archive` exactly once, byte for byte, and
nowhere else; none is lost at any crash point.

Per batch the job reads, commits (rows ON CONFLICT DO NOTHING + marks) and only then purges
JetStream. A kill lands either

* before a batch's transaction commits: it rolls back, JetStream still holds the batch, the
  rerun reads it again; or
* between the commit and the purge: the archive *and* JetStream hold the batch. The rerun
  reads the same batch (JetStream still has it), inserts nothing (ON CONFLICT), counts it
  as held, advances the marks by 0 new rows and purges it — so it is neither lost nor
  archived or counted twice.

The first test kills the real process at three points by watching the table; where a kill
landed is read off the state it left (an overlap of one batch between the archive and
JetStream means "after the commit, before the purge"). That window is narrow, so the
second test makes it deterministic: the process talks to NATS through a proxy that holds
its Nth stream-purge request, and is killed while the batch is committed but not purged —
including twice on the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
from nats.js.errors import NotFoundError

from app.gateway.frames import EVENT_NAMESPACE
from config.settings import Settings
from runtime.connections import Connections
from runtime.eventlog import first_held
from streams.definitions import EVENTS
from streams.permissions import Channel, Role
from streams.protocol import Actor, Event
from streams.subjects import wedding_subject, wedding_wildcard
from tests.kits.world import World, connect, eventually, recv_type, send

BATCH = 20
VIA_GATEWAY = 10  # a few events take the real WebSocket path; the rest are published directly
Stored = dict[int, tuple[str, bytes]]  # seq -> (channel, exact stored bytes)


# -- the wedding's events --------------------------------------------------------------


async def _fill(conns: Connections, world: World, n: int) -> Stored:
    """``n`` events in the wedding (mostly chat), with the exact (seq, channel, bytes)."""
    stored: Stored = {}
    token = await world.join(world.couple)
    async with await connect(world.base, world.wedding, token) as ws:
        await recv_type(ws, "welcome")
        for i in range(VIA_GATEWAY):
            await send(ws, type="message", id=f"ws{i}", channel="chat", data={"text": f"ws {i}"})
        acks = [(await recv_type(ws, "ack"))["seq"] for _ in range(VIA_GATEWAY)]
    for seq in acks:
        msg = await conns.js.get_msg(EVENTS.name, seq)
        assert msg.subject == wedding_subject(world.wedding, "chat") and msg.data
        stored[seq] = ("chat", msg.data)

    # the gateway's envelope and subject (app/gateway/frames.py `_publish`)
    session, encode, channels = uuid.uuid4().hex, msgspec.json.Encoder(), list(Channel)

    async def one(i: int) -> None:
        channel = Channel.CHAT if i % 10 else channels[i // 10 % len(channels)]
        msg_id = f"{session}:m{i}"
        payload = encode.encode(
            Event(
                id=str(uuid.uuid5(EVENT_NAMESPACE, msg_id)),
                type="message",
                channel=channel,
                actor=Actor(user_id=world.couple, role=Role.COUPLE),
                data={"text": f"message {i} " + "x" * (i % 50), "n": i},
                ts=time.time(),
            )
        )
        ack = await conns.js.publish(
            wedding_subject(world.wedding, channel),
            payload,
            stream=EVENTS.name,
            headers={"Nats-Msg-Id": msg_id},
        )
        assert not ack.duplicate
        stored[ack.seq] = (channel.value, payload)

    for start in range(0, n - VIA_GATEWAY, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(n - VIA_GATEWAY, start + 200))))
    assert len(stored) == n
    return stored


async def _complete(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        for status in ("wedding_day", "completed"):
            r = await c.patch(
                f"/api/weddings/{world.wedding}",
                headers=world.auth(world.couple),
                json={"status": status},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == status


async def _no_lagging_durable(conns: Connections) -> None:
    """The archive job leaves alone what a durable consumer of WEDSYNC_EVENTS has yet to
    process; a `notifications` durable left behind (stopped) by an earlier test module
    would pin every new event in JetStream. No worker runs in this module: drop it."""
    with contextlib.suppress(NotFoundError):
        await conns.js.delete_consumer(EVENTS.name, "notifications")


# -- the archive process ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def _archive_run(
    settings: Settings, wedding: str, log: Path, nats_url: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        **settings.to_env(),
        "WEDSYNC_LOG_LEVEL": "WARNING",
        "WEDSYNC_RETENTION_ARCHIVE_BATCH": str(BATCH),
        "WEDSYNC_RETENTION_AFTER_COMPLETED_DAYS": "0",
    }
    if nats_url is not None:
        env["WEDSYNC_NATS_URL"] = nats_url
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wedsync.cli",
            "retention",
            "run",
            "archive",
            "--wedding",
            wedding,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=out,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _kill(proc: asyncio.subprocess.Process, conns: Connections) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # its PostgreSQL session ends when the server sees the socket close: wait for the job
    # and wedding advisory locks (workers/retention/jobs.py) to go, or the rerun is JobBusy
    await eventually(lambda: _no_retention_locks(conns), timeout=10)


async def _no_retention_locks(conns: Connections) -> bool:
    n = await conns.pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND classid::bigint = ANY($1::bigint[])",
        [0x57EE, 0x57EF],
    )
    return int(n) == 0


async def _archived_count(conns: Connections, wedding: str) -> int:
    n: int = await conns.pool.fetchval(
        "SELECT count(*) FROM event_archive WHERE wedding_id = $1", uuid.UUID(wedding)
    )
    return n


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _running_until(
    proc: asyncio.subprocess.Process, log: Path, check: Callable[[], Awaitable[bool] | bool]
) -> None:
    """Poll ``check`` while the process runs; fail if it ends first (nothing left to kill)."""

    async def ready() -> bool:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if not result and proc.returncode is not None:
            raise AssertionError(
                f"archive run exited ({proc.returncode}) before the kill:\n" + _tail(log)
            )
        return bool(result)

    await eventually(ready, timeout=30)


# -- what a crash left -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    archived: list[int]  # the archive's seqs for the wedding, ascending (with any repeats)
    held: int  # the wedding's messages JetStream holds
    first_held: int | None


async def _snapshot(conns: Connections, wedding: str) -> Snapshot:
    rows = await conns.pool.fetch(
        "SELECT seq FROM event_archive WHERE wedding_id = $1 ORDER BY seq", uuid.UUID(wedding)
    )
    info = await conns.js.stream_info(EVENTS.name, subjects_filter=wedding_wildcard(wedding))
    return Snapshot(
        [r["seq"] for r in rows],
        sum((info.state.subjects or {}).values()),
        await first_held(conns.js, uuid.UUID(wedding), 1),
    )


def _stage(snap: Snapshot, seqs: list[int]) -> str:
    """Check nothing is lost or doubled at this crash point; name the point."""
    k = len(snap.archived)
    assert snap.archived == seqs[:k], "the archive holds an in-order prefix, each seq once"
    if snap.first_held is None:
        assert snap.held == 0
        overlap = 0
    else:
        start = seqs.index(snap.first_held)
        assert snap.held == len(seqs) - start, "JetStream holds an unbroken suffix"
        overlap = max(0, k - start)
    assert k + snap.held - overlap == len(seqs), (k, snap.held, overlap)  # none lost
    if overlap == 0:
        return "before a commit (batch rolled back or not begun)"
    assert overlap == BATCH, f"archive and JetStream share {overlap} events, not one batch"
    return "after a commit, before its purge"


# -- the end state ---------------------------------------------------------------------


async def _assert_archived_exactly(
    conns: Connections,
    world: World,
    stored: Stored,
    runs_after: int,
    killed: int,
    counts: dict[str, int],
) -> None:
    wedding = uuid.UUID(world.wedding)
    seqs = sorted(stored)
    rows = await conns.pool.fetch(
        "SELECT seq, channel, data FROM event_archive WHERE wedding_id = $1 ORDER BY seq", wedding
    )
    got = [(r["seq"], r["channel"], bytes(r["data"])) for r in rows]
    dupes = len(got) - len({s for s, _, _ in got})
    missing = sorted(set(stored) - {s for s, _, _ in got})
    extra = sorted({s for s, _, _ in got} - set(stored))
    assert not (dupes or missing or extra), (
        f"{dupes} duplicate rows; missing seqs {missing[:20]} ({len(missing)}); "
        f"extra seqs {extra[:20]} ({len(extra)})"
    )
    wrong = [s for s, ch, data in got if (ch, data) != stored[s]]
    assert not wrong, f"bytes or channel differ for seqs {wrong[:20]} ({len(wrong)})"

    assert await first_held(conns.js, wedding, 1) is None, "JetStream still holds events"
    info = await conns.js.stream_info(EVENTS.name, subjects_filter=wedding_wildcard(wedding))
    assert not info.state.subjects

    marks = await conns.pool.fetchrow(
        "SELECT purged_upto, last_seq, archived FROM archive_marks WHERE wedding_id = $1", wedding
    )
    assert marks is not None
    assert (marks["archived"], marks["last_seq"]) == (len(seqs), seqs[-1]), dict(marks)
    assert marks["purged_upto"] >= seqs[-1]

    await _assert_history(world, stored)

    runs = await conns.pool.fetch(
        "SELECT finished_at, ok, counts, error FROM retention_runs "
        "WHERE job = 'archive' AND id > $1 ORDER BY id",
        runs_after,
    )
    assert len(runs) == killed + 1
    for run in runs[:-1]:  # killed midway: closed as interrupted by the next run
        assert run["ok"] is False and run["error"] == "interrupted", dict(run)
    final = runs[-1]
    assert final["finished_at"] is not None and final["ok"] is True, dict(final)
    assert final["error"] is None and json.loads(final["counts"]) == counts


async def _assert_history(world: World, stored: Stored) -> None:
    """The history API (paged) serves every event once, in seq order, byte-identical
    (merging JetStream and the archive wherever the crash left them)."""
    seqs = sorted(stored)
    history: list[tuple[int, object]] = []
    after = 0
    async with httpx.AsyncClient(base_url=world.base, timeout=30) as c:
        while True:
            r = await c.get(
                f"/api/weddings/{world.wedding}/events",
                headers=world.auth(world.couple),
                params={"after_seq": after, "limit": 1000},
            )
            assert r.status_code == 200, r.text
            page = r.json()
            history += [(e["seq"], e["event"]) for e in page["events"]]
            if page["next_after_seq"] is None:
                break
            after = page["next_after_seq"]
    assert page["last_seq"] == seqs[-1]
    got = [s for s, _ in history]
    assert got == seqs, (
        f"history: {len(got)} events for {len(seqs)}; missing {sorted(set(seqs) - set(got))[:20]}, "
        f"repeated {len(got) - len(set(got))}"
    )
    assert all(ev == msgspec.json.decode(stored[s][1]) for s, ev in history)


async def _last_run_id(conns: Connections) -> int:
    n: int = await conns.pool.fetchval("SELECT coalesce(max(id), 0) FROM retention_runs")
    return n


async def _finish(
    conns: Connections, settings: Settings, world: World, log: Path, seqs: list[int]
) -> dict[str, int]:
    """Run the job to the end; its counts must match what the crashes left."""
    before = await _snapshot(conns, world.wedding)
    async with _archive_run(settings, world.wedding, log) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, _tail(log)
    counts = dict(kv.split("=") for kv in out.decode().split())
    assert counts == {
        "weddings": "1",
        "archived": str(len(seqs) - len(before.archived)),
        "purged": str(before.held),
        "held_back": "0",
    }, counts
    return {k: int(v) for k, v in counts.items()}


# -- the tests -------------------------------------------------------------------------

N = 2000
KILL_AT = (0.15, 0.45, 0.75)  # kill once the archive holds this share of the events


async def test_sigkill_mid_archive_run_loses_and_doubles_nothing(
    settings: Settings, conns: Connections, world: World, tmp_path: Path
) -> None:
    stored = await _fill(conns, world, N)
    seqs = sorted(stored)
    await _complete(world)
    await _no_lagging_durable(conns)
    runs_after = await _last_run_id(conns)
    log = tmp_path / "archive.log"

    stages: list[tuple[int, str]] = []
    for share in KILL_AT:
        target = int(N * share)

        async def reached(target: int = target) -> bool:
            return await _archived_count(conns, world.wedding) >= target

        async with _archive_run(settings, world.wedding, log) as proc:
            await _running_until(proc, log, reached)
            await _kill(proc, conns)
        snap = await _snapshot(conns, world.wedding)
        assert len(snap.archived) < N, "the kill must land mid-run"
        stages.append((len(snap.archived), _stage(snap, seqs)))
        await _assert_history(world, stored)
    print(f"\nkills (archived rows at the kill, stage): {stages}")
    assert [k for k, _ in stages] == sorted(k for k, _ in stages)  # progress across reruns

    counts = await _finish(conns, settings, world, log, seqs)
    await _assert_archived_exactly(conns, world, stored, runs_after, len(KILL_AT), counts)


class PurgeGate:
    """A TCP proxy in front of nats-server for one process: it forwards everything but
    holds that process's ``hold_at``-th JetStream stream-purge request (never delivered),
    so a SIGKILL lands after the batch's commit and before its purge, every time."""

    MARK = b"$JS.API.STREAM.PURGE."

    def __init__(self, upstream: str, hold_at: int) -> None:
        u = urlsplit(upstream.split(",")[0])
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 4222
        self.hold_at, self.purges = hold_at, 0
        self.held = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for w in self._writers:
            w.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(self.host, self.port)
        self._writers += [cw, sw]
        for t in (
            asyncio.ensure_future(self._pipe(sr, cw)),
            asyncio.ensure_future(self._gate(cr, sw)),
        ):
            self._tasks.add(t)

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await r.read(65536):
                w.write(chunk)
                await w.drain()
        w.close()

    async def _gate(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tail = b""  # a marker may straddle two reads
        with contextlib.suppress(ConnectionError):
            while chunk := await r.read(65536):
                data, at = tail + chunk, -1
                while (at := data.find(self.MARK, at + 1)) >= 0:
                    self.purges += 1
                    if self.purges == self.hold_at:  # forward up to it; the line never ends
                        w.write(chunk[: max(0, at - len(tail))])
                        await w.drain()
                        self.held.set()
                        return
                w.write(chunk)
                await w.drain()
                tail = data[-(len(self.MARK) - 1) :]
        w.close()


async def test_sigkill_between_commit_and_purge_archives_once(
    settings: Settings, conns: Connections, world: World, tmp_path: Path
) -> None:
    n = 200
    stored = await _fill(conns, world, n)
    seqs = sorted(stored)
    await _complete(world)
    await _no_lagging_durable(conns)
    runs_after = await _last_run_id(conns)
    log = tmp_path / "archive.log"
    assert settings.nats.url is not None

    # (purge request held, batches archived when it is): batch 3 committed and held; the
    # rerun re-reads batch 3, inserts nothing and is killed before its purge again; the next
    # purges batch 3, commits batch 4 and is killed before purging it
    for hold_at, committed in ((3, 3), (1, 3), (2, 4)):
        gate = PurgeGate(settings.nats.url, hold_at)
        async with gate as gate_url, _archive_run(settings, world.wedding, log, gate_url) as proc:
            await _running_until(proc, log, gate.held.is_set)
            # in the window: the batch is committed, JetStream still holds it
            assert await _archived_count(conns, world.wedding) == committed * BATCH
            await _kill(proc, conns)
        snap = await _snapshot(conns, world.wedding)
        assert _stage(snap, seqs) == "after a commit, before its purge"
        assert (len(snap.archived), snap.held) == (committed * BATCH, n - (committed - 1) * BATCH)
        await _assert_history(world, stored)  # both hold the batch: still served once
    marks = await conns.pool.fetchval(
        "SELECT archived FROM archive_marks WHERE wedding_id = $1", uuid.UUID(world.wedding)
    )
    assert marks == 4 * BATCH, "a replayed batch is not counted again"

    counts = await _finish(conns, settings, world, log, seqs)
    await _assert_archived_exactly(conns, world, stored, runs_after, 3, counts)
