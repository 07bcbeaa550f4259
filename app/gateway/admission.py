"""Admission control: a gateway process takes on only what it can deliver in time.

Past its capacity a gateway does not queue (a queue only turns overload into latency for
everyone: tens of seconds, measured before this existed). It refuses part of the frames
that would store something (``message``, ``change``) with the documented ``overloaded``
error carrying ``retry_after``, so that what it accepts is still delivered quickly. Two
signals, both per process:

* **event loop lag** — how late a timer that should fire every ``TICK`` seconds fires.
  Everything this process does (reading frames, fanning events out to sockets, presence)
  runs on its one event loop, so lag is the delay every accepted frame will see. While the
  lag is above ``max_lag`` the share of frames admitted falls multiplicatively (x0.7 per
  tick); while it is below, it grows back additively (+5 % per tick): AIMD, which sheds
  just enough rather than oscillating between all and nothing;
* **publishes in flight** to JetStream — a hard cap (``max_inflight``): a slow or
  restarting NATS must not make every socket's frame wait in memory.

Refusing costs a decode and one small error frame; accepting costs a publish and a frame
per room member, which is why shedding at the edge restores the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from runtime import tasks

log = logging.getLogger(__name__)

TICK = 0.025  # seconds between lag samples
DECREASE = 0.7  # admitted share multiplied by this per tick while lagging
INCREASE = 0.05  # added per tick while not lagging
FLOOR = 0.02  # never refuse everything: a trickle keeps measuring


class Admission(tasks.Background):
    """``async with Admission(max_lag, max_inflight) as a``; ``a.refuse()`` per frame."""

    name = "admission"

    def __init__(self, max_lag: float, max_inflight: int) -> None:
        self.max_lag, self.max_inflight = max_lag, max_inflight
        self.share = 1.0  # of frames admitted
        self.lag = 0.0  # seconds, the last sample
        self.inflight = 0
        self.refused = 0
        self._random = random.Random()
        self._overloaded_since: float | None = None

    def enabled(self) -> bool:
        return self.max_lag > 0

    def refuse(self) -> float | None:
        """None to admit the frame; else the seconds the client should wait (retry_after)."""
        if self.inflight >= self.max_inflight:
            self.refused += 1
            return 1.0
        if self.share >= 1.0 or self._random.random() < self.share:
            return None
        self.refused += 1
        # the deeper the overload, the longer the wait asked for (0.5 s .. 5 s)
        return round(min(5.0, 0.5 / max(self.share, 0.1)), 2)

    async def run(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds, so a
        # timer a fraction of a millisecond late would read as punctual
        expected = time.perf_counter() + TICK
        while True:
            await asyncio.sleep(max(0.0, expected - time.perf_counter()))
            now = time.perf_counter()
            self.lag = max(0.0, now - expected)
            expected = now + TICK
            if self.lag > self.max_lag:
                self.share = max(FLOOR, self.share * DECREASE)
            elif self.share < 1.0:
                self.share = min(1.0, self.share + INCREASE)
            self._report()

    def _report(self) -> None:
        """One log line when shedding starts, one when it ends."""
        now = time.monotonic()
        if self.share < 1.0 and self._overloaded_since is None:
            self._overloaded_since = now
            log.warning(
                "overloaded (event loop %.0f ms late): refusing part of the frames", self.lag * 1000
            )
        elif self.share >= 1.0 and self._overloaded_since is not None:
            log.warning(
                "no longer overloaded after %.1fs (%d frames refused so far)",
                now - self._overloaded_since,
                self.refused,
            )
            self._overloaded_since = None
