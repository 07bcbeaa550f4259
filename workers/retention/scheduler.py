"""``wedsync worker retention``: the retention jobs on their cron schedules (APScheduler).

The jobs keep their progress in the stores they work on (what is archived is in the archive
and gone from JetStream), so a restarted worker just runs the next scheduled pass. A job
still running when its next time comes is not started twice (``max_instances=1``), and
replicas take turns (each run holds the job's advisory lock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from types import TracebackType
from typing import Self

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from workers.retention.jobs import Job, JobBusy, run_job

log = logging.getLogger(__name__)


class RetentionScheduler:
    def __init__(self, pool: asyncpg.Pool, jobs: list[tuple[Job, str]]) -> None:
        self.pool = pool
        self.jobs = jobs  # (job, crontab)
        self._scheduler: AsyncIOScheduler | None = None
        self._stopped = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    async def _run(self, job: Job) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await run_job(self.pool, job)
        except JobBusy as exc:
            log.info("%s", exc)
        except Exception:
            log.exception("retention job %s failed", job.name)
        finally:
            self._running.discard(task)

    async def __aenter__(self) -> Self:
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        for job, crontab in self.jobs:
            scheduler.add_job(
                self._run,
                CronTrigger.from_crontab(crontab, timezone=dt.UTC),
                args=[job],
                id=job.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=3600,
            )
        scheduler.start()
        self._scheduler = scheduler
        for j in scheduler.get_jobs():
            log.info("retention job %s: next run %s", j.id, j.next_run_time)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for task in list(self._running):  # a job stopped midway resumes on its next run
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()
