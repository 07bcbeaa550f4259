"""The workers this build ships, by the name `wedsync worker NAME` takes.

A worker is either a JetStream consumer (a consumer spec and a handler, run by the shared
ConsumerRunner) or a service: an async context manager with ``wait()`` built from the
process's connections (e.g. the presence expiry, which watches a KV bucket). `wedsync dev`
starts one process for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import NOTIFICATIONS_CONSUMER, ConsumerSpec, conflicts_consumer
from workers.retention.jobs import Job
from workers.runner import Handler


class Service(Protocol):
    async def wait(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerDefinition:
    name: str
    consumer: ConsumerSpec | None = None
    handler: Handler | None = None
    service: Callable[[Connections], AbstractAsyncContextManager[Service]] | None = None


class Together:
    """Services run side by side in one worker: ``wait`` ends when the first one ends."""

    def __init__(self, *parts: Service) -> None:
        self.parts = parts

    async def wait(self) -> None:
        tasks = [asyncio.ensure_future(p.wait()) for p in self.parts]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()


def _presence(settings: Settings) -> WorkerDefinition:
    from runtime.presence import Mirror, presence_bucket
    from workers.presence import PresenceAnalytics, PresenceExpiry

    @contextlib.asynccontextmanager
    async def service(conns: Connections) -> AsyncIterator[Service]:
        kv = await presence_bucket(conns.js, replicas=settings.nats.replicas)
        p = settings.presence
        async with (
            Mirror(kv, lambda change: None) as mirror,
            PresenceExpiry(conns.js, kv, mirror, p) as expiry,
            PresenceAnalytics(mirror.table, conns.pool, p.sample_every) as analytics,
        ):
            yield Together(expiry, analytics)

    return WorkerDefinition("presence", service=service)


def _conflicts(settings: Settings) -> WorkerDefinition:
    from workers.conflicts import ApprovalExpiry, ConflictHandler, OutboxRelay
    from workers.runner import ConsumerRunner

    @contextlib.asynccontextmanager
    async def service(conns: Connections) -> AsyncIterator[Service]:
        handler = ConflictHandler(settings.conflicts)
        owned = settings.conflicts.owned()
        async with contextlib.AsyncExitStack() as stack:
            relay = await stack.enter_async_context(OutboxRelay(conns.js, conns.pool, owned))
            parts: list[Service] = [
                await stack.enter_async_context(
                    ConsumerRunner(
                        conns.js, conns.pool, conflicts_consumer(p), handler, settings.worker
                    )
                )
                for p in owned
            ]
            parts.append(
                await stack.enter_async_context(
                    ApprovalExpiry(conns.js, conns.pool, settings.conflicts)
                )
            )
            yield Together(relay, *parts)

    return WorkerDefinition("conflicts", service=service)


def _notifications(settings: Settings) -> WorkerDefinition:
    from runtime.crypto import ContactCipher
    from runtime.presence import Mirror, presence_bucket
    from workers.notifications import Dispatcher, Escalator, Planner
    from workers.runner import ConsumerRunner

    @contextlib.asynccontextmanager
    async def service(conns: Connections) -> AsyncIterator[Service]:
        assert settings.auth.data_key is not None, "contact details need WEDSYNC_DATA_KEY"
        cipher = ContactCipher(settings.auth.data_key)
        kv = await presence_bucket(conns.js, replicas=settings.nats.replicas)
        n = settings.notify
        async with (
            Mirror(kv, lambda change: None) as mirror,
            ConsumerRunner(
                conns.js,
                conns.pool,
                NOTIFICATIONS_CONSUMER,
                Planner(n, mirror.table),
                settings.worker,
            ) as planner,
            Dispatcher(conns.pool, conns.nc, conns.js, n, cipher) as dispatcher,
            Escalator(conns.pool, n) as escalator,
        ):
            yield Together(planner, dispatcher, escalator)

    return WorkerDefinition("notifications", service=service)


def retention_jobs(
    settings: Settings, conns: Connections, *, weddings: list[uuid.UUID] | None = None
) -> dict[str, Job]:
    """The retention jobs by name (`wedsync retention run NAME`); ``weddings`` limits the
    archive job to those."""
    from workers.retention import ArchiveJob, CleanupJob

    r = settings.retention
    return {
        "archive": ArchiveJob(
            conns.nc,
            conns.js,
            conns.pool,
            r,
            consumers=(NOTIFICATIONS_CONSUMER.durable,),
            only=weddings,
        ),
        "cleanup": CleanupJob(conns.nc, conns.js, conns.pool, r),
    }


def _retention(settings: Settings) -> WorkerDefinition:
    from workers.retention import RetentionScheduler

    @contextlib.asynccontextmanager
    async def service(conns: Connections) -> AsyncIterator[Service]:
        jobs = retention_jobs(settings, conns)
        r = settings.retention
        schedule = [(jobs["archive"], r.archive_cron), (jobs["cleanup"], r.cleanup_cron)]
        async with RetentionScheduler(conns.pool, schedule) as scheduler:
            yield scheduler

    return WorkerDefinition("retention", service=service)


def _documents(settings: Settings) -> WorkerDefinition:
    from workers.documents import CONSUMER, Compactor, HeadHandler
    from workers.runner import ConsumerRunner

    @contextlib.asynccontextmanager
    async def service(conns: Connections) -> AsyncIterator[Service]:
        async with (
            ConsumerRunner(conns.js, conns.pool, CONSUMER, HeadHandler(), settings.worker) as heads,
            Compactor(conns.js, conns.pool) as compactor,
        ):
            yield Together(heads, compactor)

    return WorkerDefinition("documents", service=service)


WORKERS: dict[str, Callable[[Settings], WorkerDefinition]] = {
    "presence": _presence,
    "conflicts": _conflicts,
    "notifications": _notifications,
    "retention": _retention,
    "documents": _documents,
}
