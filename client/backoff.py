"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog, 2015).

``delay(n) = uniform(0, min(cap, base * 2**n))``: clients that lost the same server do not
come back in lockstep, and the expected wait still grows exponentially.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base: float = 0.25
    cap: float = 15.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * 2.0 ** min(attempt, 32))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0 = first)."""
        return self.rng.uniform(0, self.ceiling(attempt))
