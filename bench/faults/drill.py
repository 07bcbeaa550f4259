"""One outage, drilled: a fresh wedding in use, a service taken away while traffic flows,
brought back, and what it cost (bench/faults/audit.py) once the system is quiet again.

Timeline: the members chat and change state for ``warmup`` s; a burst of changes and
messages from each of them is acknowledged (work in flight in the workers) and the
service is stopped at once; it stays away ``outage.seconds``; it is started again on the
same port and data; traffic goes on for ``after`` s, then stops; then the drill waits
(at most ``settle_timeout``) for everything to arrive, and audits.

*Recovered in* is measured from the restart: a marker message (mentioning the aunt) and a
marker change are sent at once, and the system has recovered when every send made before
the restart is answered, the marker reached every member, the marker change's outcome
reached its author and the marker's notification is in the aunt's inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bench.faults.audit import Audit, audit, settle
from bench.faults.services import Outage, Services
from bench.faults.system import Watched
from bench.faults.traffic import Send, Traffic, Wedding
from config.settings import AuthSettings

Mails = Callable[[], list[tuple[str, str]]]  # (idempotency key, Message-ID) of each email


@dataclass(frozen=True)
class Pace:
    """How long each phase lasts and how busy the members are."""

    warmup: float = 3.0
    after: float = 5.0
    settle_timeout: float = 60.0
    rate: float = 4.0  # chat messages per second per member
    change_every: float = 1.5  # seconds between a member's task updates


async def drill(
    outage: Outage,
    services: Services,
    urls: list[str],
    auth: AuthSettings,
    system: Watched,
    *,
    pace: Pace = Pace(),
    aunt_email: str | None = None,
    mails: Mails | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Audit:
    wedding = Wedding(urls, auth)
    await wedding.create(aunt_email=aunt_email)
    traffic = Traffic(wedding, rate=pace.rate, change_every=pace.change_every)
    recovery: asyncio.Task[float] | None = None
    parts: dict[str, float] = {}
    try:
        await traffic.seed()
        traffic.start()
        await asyncio.sleep(pace.warmup)  # traffic before the fault (deliberate)
        await _acked(traffic.burst(), timeout=30)
        log(f"{outage.name}: stopping {outage.service} ({outage.how})")
        await services.stop(outage.service, outage.how)
        await asyncio.sleep(outage.seconds)  # the outage itself (deliberate)
        await services.start(outage.service)
        restarted = time.monotonic()
        log(f"{outage.name}: {outage.service} is back")
        recovery = asyncio.create_task(_recovered(wedding, restarted, parts))
        await asyncio.sleep(pace.after)  # traffic after the fault (deliberate)
        await traffic.stop()
        emails = None if mails is None else _emails_check(wedding, mails)
        settled = await settle(system, wedding, pace.settle_timeout, emails)
        result = await audit(outage.name, wedding, system, mails)
        result.settled, result.recovery = settled, parts
        if recovery.done() and not recovery.cancelled():
            result.recovered_in = round(recovery.result(), 2)
        return result
    finally:
        if recovery is not None:
            recovery.cancel()
        await traffic.stop()
        await wedding.close()


async def _acked(sends: list[Send], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(s.done for s in sends):
        if time.monotonic() > deadline:
            raise RuntimeError("the burst before the fault was not acknowledged")
        await asyncio.sleep(0.01)


async def _recovered(wedding: Wedding, restarted: float, parts: dict[str, float]) -> float:
    """Seconds from ``restarted`` until a marker went all the way through (see above);
    ``parts`` gets the seconds at which each part of it was first seen through."""
    first = wedding.members[0]
    before = [s for m in wedding.members for s in m.sends if s.at < restarted]
    marker = first.say(f"@{wedding.aunt} marker: everything is back")
    change = first.change("update", {"title": "marker"}, 1)
    checks: dict[str, Callable[[], bool]] = {
        "earlier sends answered": lambda: all(s.done for s in before),
        "marker message acked": lambda: marker.acked_at is not None,
        "marker message delivered": lambda: (
            marker.seq is not None and all(marker.seq in m.arrived for m in wedding.members)
        ),
        "marker change applied": lambda: change.id in first.outcomes(),
    }
    while True:
        now = time.monotonic()
        for name, check in checks.items():
            if name not in parts and check():
                parts[name] = round(now - restarted, 2)
        if len(parts) == len(checks):
            event_id = next(e["id"] for q, e in first.received if q == marker.seq)
            with contextlib.suppress(httpx.HTTPError):
                if any(n["event_id"] == event_id for n in await wedding.inbox()):
                    parts["marker notified"] = round(time.monotonic() - restarted, 2)
                    return parts["marker notified"]
        await asyncio.sleep(0.1)


def _emails_check(wedding: Wedding, mails: Mails) -> Callable[[], Awaitable[bool]]:
    """True once every mention in the stream has its email."""

    async def check() -> bool:
        history = await wedding.history()
        keys = {k for k, _ in mails()}
        return all(
            f"{e['event']['id']}:{wedding.aunt}:email" in keys
            for e in history
            if e["event"]["type"] == "message"
            and f"@{wedding.aunt}" in str(e["event"]["data"].get("text", ""))
        )

    return check
