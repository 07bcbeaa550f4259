"""Child processes for the embedded servers: spawned tied to our life, and leftovers reaped.

Every server we start gets ``PR_SET_PDEATHSIG`` so that it is told to shut down even when
its parent dies by SIGKILL; leftovers of a run whose children survived anyway are found by
the pid files in the data dir and stopped before the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import psutil

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when we die.

    It runs after ``setuid`` in the child (CPython's order), which matters: changing
    credentials clears the parent-death signal.
    """

    def _set() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return _set


def running_pid(pid: int, marker: str) -> psutil.Process | None:
    """The live process ``pid`` if its command line mentions ``marker`` (our data dir)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if any(marker in part for part in proc.cmdline()):
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return None


def stop_leftover(pid_file: Path, marker: str, sig: int, *, timeout: float = 15.0) -> bool:
    """Stop the process named by a stale pid file (first line) if it is still ours."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return False
    proc = running_pid(pid, marker)
    if proc is None:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return True


async def wait_for_log(
    proc: asyncio.subprocess.Process, log: Path, offset: int, needle: str, timeout: float
) -> None:
    """Wait until ``needle`` appears in ``log`` after ``offset``, or fail if the child exits."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        with log.open("rb") as fh:
            fh.seek(offset)
            if needle.encode() in fh.read():
                return
        if proc.returncode is not None:
            raise EmbeddedError(f"{log.name}: server exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise EmbeddedError(f"{log.name}: not ready after {timeout:.0f}s; see {log}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def terminate(proc: asyncio.subprocess.Process, sig: int, timeout: float = 20.0) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def service_user(name: str) -> pwd.struct_passwd | None:
    """When running as root, the unprivileged account PostgreSQL must run as (created once)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def allow_traverse(path: Path) -> None:
    """Let another account reach ``path``: add search (x) permission on its parents."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedServer:
    """One server process we start and own (nats-server, the postmaster): a subclass's
    ``start()`` sets ``_proc``; ``stop(sig)`` ends it with its clean signal by default (or
    another: SIGKILL is a crash); ``async with`` starts it, and stops it on the way out or
    if starting failed half-way."""

    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self, sig: int | None = None) -> None:
        if self._proc is not None:
            await terminate(self._proc, self.stop_signal if sig is None else sig)
            self._proc = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
