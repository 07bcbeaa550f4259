"""A service that runs one step every few seconds until stopped (sweeps, samplers)."""

from __future__ import annotations

import asyncio
import logging

from runtime import tasks
from workers.outage import OUTAGES, is_infrastructure

log = logging.getLogger(__name__)


class Periodic(tasks.Background):
    """``async with Sub(...) as s: await s.wait()`` runs ``s.tick()`` every ``s.every``
    seconds; a failing tick is logged and the next one runs as usual. A tick failing
    because NATS or PostgreSQL is unreachable is an outage: reported once per process
    (:data:`workers.outage.OUTAGES`), with the next tries spaced out up to 5 s."""

    every: float = 1.0
    name: str = "periodic"

    async def tick(self) -> object:
        raise NotImplementedError

    async def wait(self) -> None:
        assert self._task is not None, "not started: use `async with`"
        await self._task

    async def pause(self, result: object) -> None:
        """Between ticks, given what the last returned (None if it failed): sleep ``every``.
        A subclass may wake earlier (a notification) or not pause while there is work."""
        await asyncio.sleep(self.every)

    async def run(self) -> None:
        backoff = 0.0
        while True:
            try:
                result = await self.tick()
            except Exception as exc:
                if not is_infrastructure(exc):
                    log.exception("%s failed", self.name)
                    result = None
                else:
                    OUTAGES.begin("NATS or PostgreSQL", f"{self.name}: {exc!r}")
                    backoff = min(max(backoff * 2, 0.25), 5.0)
                    await asyncio.sleep(backoff)
                    continue
            if backoff:
                backoff = 0.0
                OUTAGES.end()
            await self.pause(result)
