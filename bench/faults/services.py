"""The backing services an outage takes away, and the outages of issue 17's acceptance.

``OwnServices``: a nats-server and a PostgreSQL of our own (the embedded ones ``wedsync dev``
uses) on fixed ports under one directory, so each can be stopped, or killed, and started
again on the same port with the same data — PostgreSQL runs crash recovery after a kill.
``CommandServices``: someone else's, through the shell commands that stop, kill and start
each one (a drill against a running system).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from wedsync.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres
from wedsync.embedded.process import free_port

SERVICES = ("nats", "postgres")
HOW = ("term", "kill")  # a clean stop (NATS: SIGTERM, PostgreSQL: fast shutdown) or SIGKILL


@dataclass(frozen=True)
class Outage:
    name: str
    service: str  # "nats" | "postgres"
    how: str  # "term" | "kill"
    seconds: float  # how long the service stays away
    what: str = ""  # what is taken away, when not the whole service (bench/faults/cluster.py)

    @property
    def label(self) -> str:
        if self.what:
            return f"{self.what}, {self.seconds:g} s"
        what = {
            ("nats", "term"): "SIGTERM",
            ("nats", "kill"): "SIGKILL",
            ("postgres", "term"): "fast stop",
            ("postgres", "kill"): "SIGKILL",
        }
        return f"{self.service} {what[(self.service, self.how)]}, {self.seconds:g} s"


#: the outages issue 17 accepts the system by; a drill runs them in this order
ACCEPTANCE = (
    Outage("nats-term", "nats", "term", 15.0),
    Outage("nats-kill", "nats", "kill", 15.0),
    Outage("postgres-fast", "postgres", "term", 30.0),
    Outage("postgres-kill", "postgres", "kill", 30.0),
)
#: the stream duplicate window (WEDSYNC_DUPLICATE_WINDOW) of a system that checks an outage
#: longer than it, and that outage: what was published before it is no longer deduplicated
SHORT_WINDOW = 5.0
PAST_WINDOW = Outage("postgres-past-window", "postgres", "term", 3 * SHORT_WINDOW)


class Services(Protocol):
    def can(self, service: str, how: str) -> bool: ...

    async def stop(self, service: str, how: str) -> None: ...

    async def start(self, service: str) -> None: ...


class OwnServices:
    """``async with OwnServices(dir) as s:`` — ``s.nats_url``, ``s.database_url``."""

    def __init__(self, root: Path) -> None:
        self.nats = EmbeddedNats(root / "nats", port=free_port())
        self.postgres = EmbeddedPostgres(root / "postgres", port=free_port())

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def can(self, service: str, how: str) -> bool:
        return service in SERVICES and how in HOW

    async def stop(self, service: str, how: str) -> None:
        if service == "nats":
            await self.nats.stop(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        else:
            await self.postgres.stop(signal.SIGKILL if how == "kill" else signal.SIGINT)

    async def start(self, service: str, timeout: float = 60.0) -> None:
        """Start again on the same port and data. After a SIGKILL, PostgreSQL's orphaned
        backends may hold its shared memory for a moment: the start is retried."""
        server = self.nats if service == "nats" else self.postgres
        deadline = time.monotonic() + timeout
        while True:
            try:
                await server.start()
                return
            except EmbeddedError:
                await server.stop()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> OwnServices:
        await self.nats.start()
        try:
            await self.postgres.start()
        except BaseException:
            await self.nats.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.postgres.stop()
        finally:
            await self.nats.stop()


class CommandServices:
    """Services run by someone else: ``commands[(service, action)]`` is a shell command,
    action ``term``, ``kill`` or ``start``; an outage without its commands is skipped."""

    def __init__(self, commands: dict[tuple[str, str], str]) -> None:
        self.commands = commands

    def can(self, service: str, how: str) -> bool:
        return (service, how) in self.commands and (service, "start") in self.commands

    async def _run(self, service: str, action: str) -> None:
        proc = await asyncio.create_subprocess_shell(self.commands[(service, action)])
        if await proc.wait() != 0:
            raise RuntimeError(
                f"{service} {action}: {self.commands[(service, action)]!r} exited {proc.returncode}"
            )

    async def stop(self, service: str, how: str) -> None:
        await self._run(service, how)

    async def start(self, service: str) -> None:
        await self._run(service, "start")
