"""``wedsync dev``: embedded services, then the API and every worker as child processes.

The parent owns everything: children are in their own process groups (a terminal Ctrl-C
reaches only us) and carry a parent-death signal, and on SIGINT/SIGTERM we stop them first,
then the embedded servers, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time

import httpx

from app.connections import connect, prepare
from app.embedded import embedded_services
from app.embedded.process import die_with_parent, free_port, terminate
from config.settings import Settings
from workers.registry import WORKERS

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _spawn(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent(signal.SIGTERM),
        start_new_session=True,
    )  # fmt: skip


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


async def run_dev(settings: Settings) -> int:
    started = time.monotonic()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with embedded_services(settings) as live:
        if live.server.port == 0:
            live = dataclasses.replace(
                live, server=dataclasses.replace(live.server, port=free_port(live.server.host))
            )
        async with connect(live, name="wedsync-dev") as conns:
            await prepare(conns, live)
        env = {**os.environ, **live.to_env()}
        children = [await _spawn(env, "api")]
        base_url = f"http://{live.server.host}:{live.server.port}"
        try:
            ready = asyncio.ensure_future(wait_ready(base_url, children))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                return 0
            ready.result()
            # the workers start once the API answers: started together, five processes
            # importing at once on two cores made the API ready in 5 s instead of 2 s
            # (bench/cold_start.py); nothing the API serves waits for a worker
            children += [await _spawn(env, "worker", name) for name in WORKERS]
            print(
                f"WedSync realtime ready at {base_url} in {time.monotonic() - started:.2f}s "
                f"(API docs {base_url}/schema, data in {live.data_dir.resolve()})",
                flush=True,
            )
            exits = [asyncio.ensure_future(c.wait()) for c in children]
            await asyncio.wait([stopped, *exits], return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                log.error("a child process exited; stopping everything")
                return 1
            return 0
        finally:
            await asyncio.gather(*(terminate(c, signal.SIGTERM) for c in children))
