"""``wedsync worker presence``: no ghosts, whatever happened to the gateways.

Gateways remove their own records after a clean disconnect's grace. This worker covers
the rest, from its own mirror of the presence bucket:

- a record marked disconnected whose grace passed (its gateway stopped or died during the
  grace) is expired;
- a record whose gateway's heartbeat has not been seen for ``WEDSYNC_PRESENCE_TTL``
  seconds (the process was killed) is expired.

Expiring is a delete conditional on the record's revision (a reconnect that took the
record over is never removed), followed by the durable ``presence.left`` event. Time is
the worker's own monotonic clock for heartbeats, so gateway clocks do not matter there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Self

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from config.settings import PresenceSettings
from runtime.presence import Mirror, expire
from streams.presence import GATEWAY_PREFIX
from workers.periodic import Periodic

log = logging.getLogger(__name__)

SLACK = 2.0  # seconds past the grace, so the owning gateway normally does it first


class PresenceExpiry(Periodic):
    """``async with PresenceExpiry(js, kv, mirror, settings) as w: await w.wait()``.

    ``mirror`` is an entered mirror of ``kv``, shared with the analytics sampler.
    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        mirror: Mirror,
        settings: PresenceSettings,
        every: float = 1.0,
    ) -> None:
        self.js, self.kv, self.settings, self.every = js, kv, settings, every
        self.name = "presence expiry"
        self.mirror = mirror
        self.expired = 0
        self._started = time.monotonic()

    async def __aenter__(self) -> Self:
        self._started = time.monotonic()
        return await super().__aenter__()

    async def tick(self) -> int:
        return await self.sweep()

    def _due(self, gateway: str, disconnected_at: float | None) -> bool:
        if disconnected_at is not None:
            return time.time() - disconnected_at > self.settings.grace + SLACK
        seen = self.mirror.table.gateways.get(gateway)
        last = seen if seen is not None else self._started
        return time.monotonic() - last > self.settings.ttl

    async def sweep(self) -> int:
        """Expire what is due now; the number of leaves emitted."""
        done = 0
        for stored in list(self.mirror.table):
            r = stored.record
            if self._due(r.gateway, r.disconnected_at):
                key = f"{r.wedding_id}.{r.connection_id}"
                if await expire(self.js, self.kv, key, stored.revision):
                    done += 1
                    log.info("expired presence of %s on %s (gateway %s)", r.user_id, key, r.gateway)
        now = time.monotonic()
        for gateway, seen in list(self.mirror.table.gateways.items()):
            if now - seen > 4 * self.settings.ttl:  # a dead gateway's heartbeat key
                with contextlib.suppress(Exception):
                    await self.kv.delete(f"{GATEWAY_PREFIX}.{gateway}")
        self.expired += done
        return done
