"""HTTP rate limits per user and per client IP (the ``limits`` library, moving window).

Counters live in each API process's memory: with N processes a client may get up to N times
the limit. A shared store (limits supports Redis/Memcached) is the upgrade path.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from app.errors import RateLimited
from config.settings import AuthSettings


class RateLimits:
    def __init__(self, auth: AuthSettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._user = parse(auth.rate_user)
        self._ip = parse(auth.rate_ip)

    async def _hit(self, item: RateLimitItem, kind: str, key: str) -> None:
        if not await self._limiter.hit(item, kind, key):
            stats = await self._limiter.get_window_stats(item, kind, key)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"too many requests for this {kind}; retry in {retry}s",
                headers={"Retry-After": str(retry)},
            )

    async def check_user(self, user_id: str) -> None:
        await self._hit(self._user, "user", user_id)

    async def check_ip(self, ip: str) -> None:
        await self._hit(self._ip, "ip", ip)
