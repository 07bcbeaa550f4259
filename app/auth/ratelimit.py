"""Rate limits (the ``limits`` library, sliding window counter): HTTP requests per user and
per client IP, WebSocket handshakes per client IP, admin API requests per admin token.

The sliding window counter keeps two counters per key (this window's and the last one's,
weighted by how much of it still overlaps) instead of one timestamp per hit: memory per key
is constant, and expiry is a dict scan. The moving window (``limits``' exact strategy) keeps
every hit and its in-memory store sweeps each key's list through ``asyncio.to_thread``: with
20 000 users that sweep was a third of an API process's CPU (bench/ratelimit.py measures
both; docs/benchmarks.md). The counter may admit up to the limit again right after a
window turns over; for abuse limits that is the trade worth making.

Counters live in each API process's memory: with N processes a client may get up to N times
the limit. A shared store (limits supports Redis/Memcached) is the upgrade path.

A request is charged by what it costs: one hit, or ``ceil(limit / 100)`` hits for a page
of ``limit`` items (``/events?limit=1000`` costs what ten cheap requests cost).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from app.errors import RateLimited
from config.settings import AuthSettings

#: items of a page that cost one hit
ITEMS_PER_HIT = 100
#: the most one request is charged (a page of 1 000, the largest any route serves)
MAX_COST = 10


def request_cost(query: Mapping[str, str]) -> int:
    """Hits one request costs: ``ceil(limit / 100)`` when it asks for a page of ``limit``
    items, else 1 (read before validation, so a malformed ``limit`` costs 1: it is refused
    with 422 anyway)."""
    raw = query.get("limit", "")
    if not raw.isdigit() or len(raw) > 6:
        return 1
    return max(1, min(MAX_COST, math.ceil(int(raw) / ITEMS_PER_HIT)))


class _Storage(MemoryStorage):
    """``limits``' in-memory storage with its expiry sweep at most once a second.

    The storage already expires a key when it is read (``get``); the sweep only frees the
    memory of keys nobody reads again. Upstream schedules a sweep of *every* key on every
    hit that finds none running, so with 20 000 users each hit paid for all of them
    (bench/ratelimit.py). The override is of the one private hook the storage calls."""

    SWEEP_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._swept = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._swept >= self.SWEEP_EVERY:
            self._swept = now
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


#: the strategies bench/ratelimit.py compares; the app uses ``sliding``
STRATEGIES: dict[str, type[RateLimiter]] = {
    "sliding": SlidingWindowCounterRateLimiter,
    "moving": MovingWindowRateLimiter,  # what the app used before (upstream's storage)
}


class RateLimits:
    def __init__(self, auth: AuthSettings, strategy: str = "sliding") -> None:
        self._limiter = STRATEGIES[strategy](
            MemoryStorage() if strategy == "moving" else _Storage()
        )
        self._user = parse(auth.rate_user)
        self._ip = parse(auth.rate_ip)
        self._ws = parse(auth.rate_ws)
        self._admin = parse(auth.rate_admin)

    async def _hit(self, item: RateLimitItem, kind: str, key: str, cost: int, what: str) -> None:
        # a request costing more than the whole limit can still pass once the window is empty
        if not await self._limiter.hit(item, kind, key, cost=min(cost, item.amount)):
            stats = await self._limiter.get_window_stats(item, kind, key)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"too many {what}; retry in {retry}s", headers={"Retry-After": str(retry)}
            )

    async def check_user(self, user_id: str, cost: int = 1) -> None:
        await self._hit(self._user, "user", user_id, cost, "requests for this user")

    async def check_ip(self, ip: str, cost: int = 1) -> None:
        await self._hit(self._ip, "ip", ip, cost, "requests from this IP")

    async def check_handshake(self, ip: str) -> None:
        await self._hit(self._ws, "ws", ip, 1, "WebSocket handshakes from this IP")

    async def check_admin(self, token: str, cost: int = 1) -> None:
        key = hashlib.sha256(token.encode()).hexdigest()[:16]  # the token itself is no key
        await self._hit(self._admin, "admin", key, cost, "admin API requests for this token")
