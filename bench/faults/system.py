"""A whole system to take services away from: our own NATS and PostgreSQL, `wedsync api`
processes and `wedsync worker` processes, each child's output kept in a log file.

Nothing in here restarts a child that exits: it stays exited, and ``exited()`` says so
(the drill and the tests report it: no process is ever restarted by hand to recover).
``stop_child``/``start_child`` are the deliberate exception: a rolling restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
import nats
import nats.errors
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from bench.faults.services import OwnServices, Services
from config.settings import Settings
from runtime.connections import connect, prepare
from streams.definitions import DEAD_LETTERS
from wedsync.embedded.process import free_port, terminate

# members chat fast from one socket each and the gateways' rate limits are not what is
# tested here (tests/kits/world.py FAST_SENDERS); HTTP limits are for many users
LIMITS = {
    "WEDSYNC_WS_RATE": "100000",
    "WEDSYNC_WS_BURST": "100000",
    "WEDSYNC_WS_QUEUE": "8192",
    "WEDSYNC_RATE_LIMIT_USER": "100000/minute",
    "WEDSYNC_RATE_LIMIT_IP": "100000/minute",
}
WORKERS = ("conflicts", "notifications")
_TIME = r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+"
_RECORD = re.compile(rf"^({_TIME} )?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout)\w*\b")
_TIMESTAMP = re.compile(rf"(^| - ){_TIME}( |$)")
_NUMBER = re.compile(r"\d+(\.\d+)?")


@dataclass
class Child:
    """One process of the system, as started (its pid is never replaced)."""

    name: str  # "api-0", "worker-conflicts"
    proc: asyncio.subprocess.Process
    log: Path
    pid: int

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def summary(self, lines: int = 12) -> str:
        """What the process logged, without traceback frames: each distinct log record or
        exception line once (numbers as N, with how often), the last ``lines`` of them."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        seen: dict[str, int] = {}
        for line in text.splitlines():
            if _RECORD.match(line) or _EXCEPTION.match(line):
                key = _NUMBER.sub("N", _TIMESTAMP.sub(r"\1", line))[:240]
                seen[key] = seen.get(key, 0) + 1
        return "\n".join(f"{n} x {k}" if n > 1 else k for k, n in list(seen.items())[-lines:])


class SystemServices(Services, Protocol):
    """The backing services a system runs on (bench/faults/services.py, cluster.py)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> Any: ...

    @property
    def nats_url(self) -> str: ...  # comma separated when several

    @property
    def database_url(self) -> str: ...


class Watched(Protocol):
    """What a drill checks besides the members: processes and the dead-letter stream."""

    def exited(self) -> list[Child]: ...

    async def dead_letters(self) -> int | None: ...


class RemoteSystem:
    """A system someone else runs: its processes are not ours to watch; the dead-letter
    stream is read when a NATS URL was given."""

    def __init__(self, nats_url: str | None) -> None:
        self.nats_url = nats_url
        self.nc: NATS | None = None

    async def __aenter__(self) -> RemoteSystem:
        if self.nats_url:
            self.nc = await nats.connect(
                self.nats_url,
                name="fault-drill",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                error_cb=_quiet,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def exited(self) -> list[Child]:
        return []

    async def dead_letters(self) -> int | None:
        if self.nc is None:
            return None
        info = await self.nc.jetstream().stream_info(DEAD_LETTERS.name)
        return int(info.state.messages)


class FaultSystem:
    """``async with FaultSystem(dir) as system:`` — services, migrations and streams, then
    ``gateways`` API processes (ready) and one process per worker (consuming)."""

    def __init__(
        self,
        root: Path,
        *,
        gateways: int = 2,
        workers: tuple[str, ...] = WORKERS,
        env: dict[str, str] | None = None,
        log_level: str = "WARNING",
        services: SystemServices | None = None,
    ) -> None:
        self.root = root
        self.services: SystemServices = services or OwnServices(root)
        self.gateway_count, self.worker_names = gateways, workers
        self.env = {**LIMITS, "WEDSYNC_LOG_LEVEL": log_level, **(env or {})}
        self.settings = Settings()
        self.urls: list[str] = []
        self.children: list[Child] = []
        self.nc: NATS | None = None  # the drill's own NATS connection (reconnects forever)
        self._stack = contextlib.AsyncExitStack()
        self._spawned: dict[str, tuple[list[str], dict[str, str]]] = {}

    async def __aenter__(self) -> FaultSystem:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        await self._stack.enter_async_context(self.services)
        base = Settings.from_env(
            {
                "WEDSYNC_DATA_DIR": str(self.root / "data"),
                "WEDSYNC_JWT_SECRET": secrets.token_urlsafe(32),
                "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
                "WEDSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),
                **self.env,
            }
        )
        self.settings = base.with_services(self.services.nats_url, self.services.database_url)
        async with connect(self.settings, name="fault-drill-setup") as conns:
            await prepare(conns, self.settings)
        self.nc = await nats.connect(
            self.services.nats_url.split(","),
            name="fault-drill",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            error_cb=_quiet,
        )
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        for i in range(self.gateway_count):
            port = free_port()
            await self._spawn(f"api-{i}", ["api"], {"WEDSYNC_PORT": str(port)})
            self.urls.append(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(timeout=2) as client:
            for url in self.urls:
                await self._until(functools.partial(_ready, client, url), 60, f"{url} ready")
        for name in self.worker_names:
            await self._spawn(f"worker-{name}", ["worker", name], {})
        if "conflicts" in self.worker_names:
            owned = self.settings.conflicts.owned()
            await self._until(
                lambda: self._consumers([f"conflicts-p{p}" for p in owned]),
                60,
                "conflicts worker consuming",
            )
        if "notifications" in self.worker_names:
            await self._until(
                lambda: self._consumers(["notifications"]), 60, "notifications worker consuming"
            )

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self._spawned[name] = (args, env)
        log = self.root / "logs" / f"{name}.log"
        child_env = {**os.environ, **self.settings.to_env(), **self.env, **env}
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wedsync.cli",
                *args,
                env=child_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.children.append(Child(name, proc, log, proc.pid))

    async def _until(self, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        async def poll() -> None:
            while not await check():
                if dead := self.exited():
                    raise RuntimeError(
                        f"{dead[0].name} exited while waiting for {what}:\n{dead[0].tail()}"
                    )
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise RuntimeError(f"not in {timeout:g} s: {what}") from None

    async def _consumers(self, names: list[str]) -> bool:
        assert self.nc is not None
        js = self.nc.jetstream()
        stream = "WEDSYNC_CHANGES" if names[0].startswith("conflicts") else "WEDSYNC_EVENTS"
        try:
            for name in names:
                await js.consumer_info(stream, name)
        except (NotFoundError, nats.errors.TimeoutError):  # a cluster electing: not yet
            return False
        return True

    # -- a rolling restart ----------------------------------------------------------------

    async def stop_child(self, name: str) -> None:
        """SIGTERM one child (as an orchestrator stops a pod) and wait for it to exit."""
        child = next(c for c in self.children if c.name == name)
        await terminate(child.proc, signal.SIGTERM, 30)

    async def start_child(self, name: str) -> None:
        """Start a stopped child again, same arguments and port; an API once ready."""
        args, env = self._spawned[name]
        self.children = [c for c in self.children if c.name != name]
        await self._spawn(name, args, env)
        if "WEDSYNC_PORT" in env:
            url = f"http://127.0.0.1:{env['WEDSYNC_PORT']}"
            async with httpx.AsyncClient(timeout=2) as client:
                await self._until(functools.partial(_ready, client, url), 60, f"{url} ready")

    # -- what the drill and the tests look at ----------------------------------------------

    def exited(self) -> list[Child]:
        """Children that are no longer running (none should ever be)."""
        return [c for c in self.children if not c.alive]

    async def dead_letters(self) -> int | None:
        """Messages in the dead-letter stream (NATS must be up)."""
        assert self.nc is not None
        info = await self.nc.jetstream().stream_info(DEAD_LETTERS.name)
        return int(info.state.messages)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(terminate(c.proc, signal.SIGTERM, 10) for c in self.children))
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self._stack.aclose()


async def _quiet(exc: Exception) -> None:
    """The drill's NATS connection while NATS is away: reconnecting is expected."""


async def _ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False
