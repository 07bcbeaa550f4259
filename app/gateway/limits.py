"""What one socket or user may spend: frames per second, and replayed events (resume).

Messages, changes and presence frames take one token each from their socket's bucket
(``WEDSYNC_WS_RATE`` / ``WEDSYNC_WS_BURST``). A resume is charged by its size to a budget
per user, wedding and gateway process (``WEDSYNC_WS_RESUME_RATE`` / ``..._BURST``): it
costs :data:`RESUME_COST` up front and one per event replayed. A replay is never cut short
(that would be a gap), so a big one may leave the budget in debt; a resume that cannot pay
its fixed cost is refused. The budget outlives the user's sockets: closing and reopening
them (each open with ``?after_seq=0``) must not reset it.
"""

from __future__ import annotations

import time
import uuid

#: the fixed part of a resume, in replayed-event units: it looks up the wedding's head and
#: the stream's and archive's bounds whatever it then replays
RESUME_COST = 100.0
_PRUNE_ABOVE = 1024  # budgets kept before full (idle) ones are forgotten


class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; :meth:`spend` may go into debt."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def spend(self, n: float) -> None:
        """Take ``n`` tokens whatever is left (a cost already incurred)."""
        self.tokens -= n

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.burst


class ReplayBudgets:
    """The resume budgets of one gateway process, by (wedding, user)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._budgets: dict[tuple[uuid.UUID, str], TokenBucket] = {}

    def start(self, wedding_id: uuid.UUID, user_id: str) -> TokenBucket | None:
        """The user's budget, charged a resume's fixed cost; None: refused (in debt)."""
        key = (wedding_id, user_id)
        budget = self._budgets.get(key)
        if budget is None:
            if len(self._budgets) >= _PRUNE_ABOVE:
                self._budgets = {k: b for k, b in self._budgets.items() if not b.full}
            budget = self._budgets[key] = TokenBucket(self.rate, self.burst)
        return budget if budget.take(RESUME_COST) else None
