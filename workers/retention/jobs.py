"""What the retention jobs share: a clock, progress reporting, per-wedding locks, the run
log, and JetStream purges that say how many messages they removed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from typing import Protocol

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from runtime.db.types import Conn

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Counts = dict[str, int]

_JOB_LOCK = 0x57EE  # pg_try_advisory_lock(class, job): one run of a job at a time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Progress(Protocol):
    def total(self, n: int, unit: str) -> None: ...
    def advance(self, n: int = 1, **counts: int) -> None: ...


class NoProgress:
    def total(self, n: int, unit: str) -> None:
        pass

    def advance(self, n: int = 1, **counts: int) -> None:
        pass


class Job(Protocol):
    name: str

    async def run(self, progress: Progress) -> Counts: ...


class InvariantError(RuntimeError):
    """A job's own check failed: it stops rather than risk losing data."""


class JobBusy(RuntimeError):
    """Another process is running this job right now."""


def _key(text: str) -> int:
    return uuid.uuid5(uuid.NAMESPACE_OID, text).int & 0x7FFF_FFFF


async def run_job(pool: asyncpg.Pool, job: Job, progress: Progress | None = None) -> Counts:
    """Run ``job`` once (unless it is running elsewhere: :class:`JobBusy`), logging the run
    and its outcome in ``retention_runs``."""
    async with pool.acquire() as lock:
        if not await lock.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", _JOB_LOCK, _key(job.name)
        ):
            raise JobBusy(f"the {job.name} job is already running")
        try:
            # we hold the job's lock: an unfinished earlier run was killed midway
            await lock.execute(
                "UPDATE retention_runs SET finished_at = now(), ok = false, error = 'interrupted' "
                "WHERE job = $1 AND finished_at IS NULL",
                job.name,
            )
            run_id = await lock.fetchval(
                "INSERT INTO retention_runs (job) VALUES ($1) RETURNING id", job.name
            )
            try:
                counts = await job.run(progress or NoProgress())
            except BaseException as exc:
                await _finish(lock, run_id, ok=False, counts={}, error=repr(exc))
                raise
            await _finish(lock, run_id, ok=True, counts=counts, error=None)
            log.info("retention job %s: %s", job.name, counts)
            return counts
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1, $2)", _JOB_LOCK, _key(job.name))


async def _finish(conn: Conn, run_id: int, *, ok: bool, counts: Counts, error: str | None) -> None:
    await conn.execute(
        "UPDATE retention_runs SET finished_at = now(), ok = $2, counts = $3::jsonb, error = $4 "
        "WHERE id = $1",
        run_id,
        ok,
        json.dumps(counts),
        error,
    )


class _PurgeReply(msgspec.Struct):
    success: bool = False
    purged: int = 0
    error: dict[str, object] | None = None


async def purge(nc: NATS, stream: str, *, below: int, subject: str | None = None) -> int:
    """Remove the stream's messages with seq < ``below`` (matching ``subject``); returns how
    many were removed (the client library's purge only says whether it worked)."""
    req: dict[str, object] = {"seq": below}
    if subject is not None:
        req["filter"] = subject
    msg = await nc.request(f"$JS.API.STREAM.PURGE.{stream}", json.dumps(req).encode(), timeout=10)
    reply = msgspec.json.decode(msg.data, type=_PurgeReply)
    if not reply.success:
        raise RuntimeError(f"purge of {stream} failed: {reply.error}")
    return reply.purged
