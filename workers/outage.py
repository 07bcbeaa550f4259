"""Telling an infrastructure outage from a failing message, and waiting one out.

A handler that cannot reach PostgreSQL or NATS has not found a poison message: the same
message succeeds once the service is back. So such a failure never counts towards a
message's dead-letter limit; the worker waits until both services answer (saying so once
per outage, not once per message) and tries again. Only a failure that repeats while both
services answer is the message's fault.

Which is which:

* *infrastructure*: the error says the connection is gone or refused (asyncpg connection
  and operator-intervention errors, ``InterfaceError``, too many connections; any NATS
  client error that is not an API answer; ``OSError``; timeouts), **or** a probe right
  after the failure finds PostgreSQL or JetStream not answering, whatever the error was;
* *the message's fault*: anything else while both answer (a data error, a bug, a refusal
  by the JetStream API such as a bad request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError

log = logging.getLogger(__name__)

_PG = (
    asyncpg.PostgresConnectionError,  # class 08, and the client's "connection does not exist"
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, out of memory
    asyncpg.InterfaceError,  # the connection closed under us
)
PROBE_TIMEOUT = 2.0


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` by itself says a service was unreachable (see the module doc)."""
    if isinstance(exc, (*_PG, OSError, TimeoutError, ServiceUnavailableError)):
        return True
    if isinstance(exc, nats.errors.Error) and not isinstance(exc, APIError):
        return True  # no servers, connection closed/reconnecting, no responders, timeouts
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_infrastructure(cause)


async def unreachable(js: JetStreamContext, pool: asyncpg.Pool) -> str | None:
    """The name of a service that does not answer right now ("NATS", "PostgreSQL"), or None."""
    try:
        await asyncio.wait_for(js.account_info(), PROBE_TIMEOUT)
    except Exception:
        return "NATS"
    try:
        async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:
            await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT)
    except Exception:
        return "PostgreSQL"
    return None


class Outages:
    """One log line when a process first meets an outage, one when it is over.

    Shared by every consumer and periodic task of a process (a worker process runs several),
    so an outage is reported once per process however many of them notice it.
    """

    def __init__(self) -> None:
        self._since: float | None = None
        self._what = ""
        self._waiting = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def begin(self, what: str, detail: str) -> None:
        if self._since is None:
            self._since, self._what = time.monotonic(), what
            log.warning("%s unreachable (%s): pausing work until it answers", what, detail)

    def end(self) -> None:
        if self._since is not None and self._waiting == 0:
            took = time.monotonic() - self._since
            log.warning("%s answers again after %.1fs: resuming", self._what, took)
            self._since = None

    async def wait_out(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        stopping: asyncio.Event,
        *,
        first: str | None = None,
        detail: str = "",
        tick: Callable[[], Awaitable[object]] | None = None,
    ) -> bool:
        """Until both services answer (True) or ``stopping`` is set (False).

        ``tick`` runs between probes (best effort: e.g. telling JetStream the message in
        hand is still being worked on, so it is not redelivered meanwhile).
        """
        delay = 0.25
        self._waiting += 1
        try:
            down = first if first is not None else await unreachable(js, pool)
            while down is not None:
                self.begin(down, detail or "probe failed")
                if tick is not None:
                    try:
                        await tick()
                    except Exception as exc:  # NATS is away too: nothing to tell it
                        log.debug("tick during outage failed: %r", exc)
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                    return False
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
                down = await unreachable(js, pool)
        finally:
            self._waiting -= 1
        self.end()
        return True


#: The process's outage reporter (workers are one process each).
OUTAGES = Outages()
