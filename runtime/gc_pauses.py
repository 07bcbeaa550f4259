"""Garbage-collector pauses: measured, and kept short in processes that hold many sockets.

A gateway holding thousands of sockets has millions of long-lived objects. CPython's full
(generation 2) collection walks them all while nothing else runs, and runs again whenever
the survivors grew by a quarter: at 5 000 sockets a process stopped for 1.2-1.6 s every few
seconds while sockets were arriving (docs/benchmarks.md, "Garbage-collector pauses"), with
almost nothing to free (tens to hundreds of objects per collection).

- ``watch()`` records every collection in ``wedsync.gc.pause`` (by generation) and logs one
  that stopped the process for longer than :data:`SLOW`.
- ``Freezer`` collects the young generations and moves what survives into the permanent
  generation (``gc.freeze()``) every ``freeze_every`` seconds, so an automatic collection
  walks only what was allocated since: its pause no longer grows with the sockets held.
  What is frozen and later becomes a reference cycle is not freed until ``reclaim_every``:
  then one full, logged collection of everything (``gc.unfreeze()`` + ``gc.collect()``),
  and frozen again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any, Self

from opentelemetry import metrics

from runtime import tasks

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)
PAUSE = meter.create_histogram(
    "wedsync.gc.pause",
    unit="s",
    description="How long one garbage collection stopped this process, by generation",
)
SLOW = 0.1  # seconds: a pause a user would notice in a live room
_ATTRS = [{"generation": g} for g in range(3)]
_started: list[float] = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    generation = int(info.get("generation", 0))
    PAUSE.record(took, _ATTRS[min(generation, 2)])
    if took > SLOW:
        log.warning(
            "garbage collection of generation %d stopped the process for %.0f ms "
            "(%d objects collected)",
            generation,
            took * 1000,
            int(info.get("collected", 0)),
        )


def watch() -> None:
    """Measure every collection of this process from now on (idempotent)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


class Freezer(tasks.Background):
    """``async with Freezer(freeze_every, reclaim_every):`` for a process's life (0: off)."""

    name = "gc freezer"

    def __init__(self, freeze_every: float, reclaim_every: float) -> None:
        self.freeze_every, self.reclaim_every = freeze_every, reclaim_every
        self._round = asyncio.Event()  # set when a round is over, then replaced

    async def next_round(self) -> None:
        """Wait until the round in progress (freeze, or reclaim and freeze) is over."""
        await self._round.wait()

    def enabled(self) -> bool:
        return self.freeze_every > 0

    async def __aenter__(self) -> Self:
        if self.enabled():
            gc.freeze()  # what starting up allocated (modules, the app) first
        return await super().__aenter__()

    async def run(self) -> None:
        reclaimed = time.monotonic()
        while True:
            await asyncio.sleep(self.freeze_every)
            if self.reclaim_every > 0 and time.monotonic() - reclaimed >= self.reclaim_every:
                reclaimed = time.monotonic()
                frozen = gc.get_freeze_count()
                gc.unfreeze()
                started = time.perf_counter()
                freed = gc.collect()
                log.info(
                    "reclaimed %d objects of %d frozen in %.0f ms",
                    freed,
                    frozen,
                    (time.perf_counter() - started) * 1000,
                )
            else:
                gc.collect(1)  # the young garbage first: only survivors are frozen
            gc.freeze()
            done, self._round = self._round, asyncio.Event()
            done.set()
