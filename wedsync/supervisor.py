"""``wedsync dev``: embedded services, then the API and every worker as child processes.

The parent owns everything: children are in their own process groups (a terminal Ctrl-C
reaches only us) and carry a parent-death signal, and on SIGINT/SIGTERM we stop them first,
then the embedded servers, so nothing is left behind.

A child that exits on its own is restarted after a delay that doubles with each of its
recent crashes (``WEDSYNC_DEV_RESTART_DELAY``), with one log line naming it and its exit
code; the Nth crash of one child within the window of ``WEDSYNC_DEV_CRASH_LOOP`` is a crash
loop, and then everything stops (exit 1). A few lines rather than a retry library: this
retries no call, it keeps processes, and tenacity/stamina would add a dependency to compute
one doubling.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import httpx

from app.cors import with_dev_origins
from config.settings import DevSettings, Settings
from runtime.connections import connect, prepare
from wedsync.embedded import embedded_services
from wedsync.embedded.process import die_with_parent, free_port, terminate
from workers.registry import WORKERS

log = logging.getLogger(__name__)

#: the longest wait before a restart, whatever the crash count
MAX_RESTART_DELAY = 30.0


class StartFailed(RuntimeError):
    """`wedsync dev` could not start (the message says why, for the user)."""


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _spawn(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent(signal.SIGTERM),
        start_new_session=True,
    )


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``exit code -9 (SIGKILL)``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code} ({signal.Signals(-code).name})"
    return f"exit code {code}"


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (bound as uvicorn binds: SO_REUSEADDR, so
    a port in TIME_WAIT is free and only a listener makes it busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


async def wait_ready(base_url: str, children: list[asyncio.subprocess.Process]) -> None:
    """Poll ``/readyz`` until 200; fails if one of ``children`` exits first."""
    async with httpx.AsyncClient(timeout=2) as client:
        delay = 0.02
        while True:
            for child in children:
                if child.returncode is not None:
                    raise RuntimeError(f"a child process exited early ({child.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base_url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


@dataclass
class Child:
    """One supervised child: its ``wedsync`` arguments, process and recent crash times."""

    name: str  # "api", "worker conflicts"
    args: tuple[str, ...]
    proc: asyncio.subprocess.Process
    crashes: collections.deque[float] = field(default_factory=collections.deque)


class Supervisor:
    """Keeps the children running until ``stop`` is set (a signal) or one crash-loops."""

    def __init__(self, env: dict[str, str], dev: DevSettings, stop: asyncio.Event) -> None:
        self.env, self.dev, self.stop = env, dev, stop
        self.limit, self.window = dev.crash_limit()
        self.children: list[Child] = []
        self.fatal: str | None = None  # why everything stopped, if not a signal (a crash loop)
        self._keepers: list[asyncio.Task[None]] = []

    async def start(self, *args: str) -> Child:
        child = Child(" ".join(args), args, await _spawn(self.env, *args))
        self.children.append(child)
        return child

    def watch(self) -> None:
        """From now on, a child that exits is restarted (or ends everything)."""
        self._keepers = [asyncio.create_task(self._keep(c)) for c in self.children]

    def restart_delay(self, crashes: int) -> float:
        """Before the restart that follows the ``crashes``-th crash within the window."""
        return float(min(self.dev.restart_delay * 2 ** (crashes - 1), MAX_RESTART_DELAY))

    async def _keep(self, child: Child) -> None:
        while True:
            code = await child.proc.wait()
            if self.stop.is_set():
                return
            now = time.monotonic()
            child.crashes.append(now)
            while now - child.crashes[0] > self.window:
                child.crashes.popleft()
            crashes = len(child.crashes)
            if crashes >= self.limit:
                self.fatal = (
                    f"{child.name} crashed {crashes} times within {self.window:g}s (last: "
                    f"{describe_exit(code)}): a crash loop; stopping everything"
                )
                log.error("%s", self.fatal)
                self.stop.set()
                return
            delay = self.restart_delay(crashes)
            log.warning(
                "%s (pid %d) exited with %s; restarting it in %.1fs (crash %d of %d allowed "
                "within %gs)",
                child.name,
                child.proc.pid,
                describe_exit(code),
                delay,
                crashes,
                self.limit - 1,
                self.window,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                return
            try:
                child.proc = await _spawn(self.env, *child.args)
            except OSError as exc:  # no process at all (fork, exec, limits): nothing to keep
                self.fatal = f"{child.name} could not be restarted ({exc}); stopping everything"
                log.error("%s", self.fatal)
                self.stop.set()
                return
            log.warning("%s restarted (pid %d)", child.name, child.proc.pid)

    async def close(self) -> None:
        """Stop restarting, then stop every child (SIGTERM, SIGKILL after a timeout)."""
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        await asyncio.gather(*(terminate(c.proc, signal.SIGTERM) for c in self.children))


def wedsync() -> str:
    """How to call ``wedsync`` from this shell: the script beside this Python (a venv's
    ``bin/``, relative to the working directory when under it), as ``wedsync`` is on the
    PATH only in an activated venv; ``wedsync`` itself when there is no such script."""
    script = os.path.join(os.path.dirname(sys.executable), "wedsync")
    if not os.path.exists(script):
        return "wedsync"
    relative = os.path.relpath(script)
    return script if relative.startswith("..") else relative


async def run_dev(settings: Settings) -> int:
    started = time.monotonic()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    server = settings.server
    if server.port != 0 and port_in_use(server.host, server.port):
        raise StartFailed(
            f"port {server.port} on {server.host} is already in use (another `wedsync dev`?); "
            "stop it or pass --port N (0 picks a free port)"
        )
    async with embedded_services(settings) as live:
        if live.server.port == 0:
            live = dataclasses.replace(
                live, server=dataclasses.replace(live.server, port=free_port(live.server.host))
            )
        live = with_dev_origins(live)  # the API's own origin (and a frontend dev server)
        async with connect(live, name="wedsync-dev") as conns:
            await prepare(conns, live)
        # the children run as the least-privilege role only: migrated above, an API
        # process's startup migration finds nothing to do and needs no owner credentials
        env = {**os.environ, **live.to_env()}
        env.pop("WEDSYNC_MIGRATE_DATABASE_URL", None)
        supervisor = Supervisor(env, live.dev, stop)
        api = await supervisor.start("api")
        base_url = f"http://{live.server.host}:{live.server.port}"
        try:
            ready = asyncio.ensure_future(wait_ready(base_url, [api.proc]))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                return 0
            if ready.exception() is not None:
                raise StartFailed(
                    f"the API process exited before it was ready "
                    f"({describe_exit(api.proc.returncode or 0)}); see its log above"
                )
            # the workers start once the API answers: started together, five processes
            # importing at once on two cores made the API ready in 5 s instead of 2 s
            # (bench/cold_start.py); nothing the API serves waits for a worker
            for name in WORKERS:
                await supervisor.start("worker", name)
            supervisor.watch()
            print(
                f"WedSync realtime ready at {base_url} in {time.monotonic() - started:.2f}s "
                f"(API docs {base_url}/schema, data in {live.data_dir.resolve()})\n"
                f'Metrics (Prometheus): curl -H "Authorization: Bearer $({wedsync()} '
                f'metrics-token)" {base_url}/metrics',
                flush=True,
            )
            await stopped
            if supervisor.fatal is not None:
                print(f"wedsync dev: {supervisor.fatal}", file=sys.stderr, flush=True)
                return 1
            return 0
        finally:
            await supervisor.close()
