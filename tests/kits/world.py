"""Driving the realtime gateway as outside clients do: real `wedsync api` processes,
weddings and members over HTTP, raw WebSocket frames."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, overload
from urllib.parse import urlencode

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from app.auth import issue_token
from config.settings import Settings
from streams.protocol import SUBPROTOCOL, TOKEN_PREFIX
from wedsync.embedded.process import free_port

T = TypeVar("T")

# the suite sends fast from one connection (and reads its acks only afterwards, so queues
# must absorb a burst on a loaded 2-core machine); modules override what they probe
FAST_SENDERS = {
    "WEDSYNC_WS_RATE": "100000",
    "WEDSYNC_WS_BURST": "100000",
    "WEDSYNC_WS_QUEUE": "8192",
}


@contextlib.asynccontextmanager
async def gateway_processes(
    settings: Settings,
    count: int = 2,
    env: dict[str, str] | None = None,
    output: list[str] | None = None,
) -> AsyncIterator[list[tuple[str, asyncio.subprocess.Process]]]:
    """``count`` `wedsync api` processes on free ports: (base URL, process) once ready.
    ``output``: gets every line they print (their logs); else their output is inherited."""
    procs, urls = [], []
    out, err = (
        (asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT) if output is not None else (None, None)
    )
    readers = []
    for _ in range(count):
        port = free_port()
        child_env = {
            **os.environ,
            **settings.to_env(),
            "WEDSYNC_PORT": str(port),
            "WEDSYNC_LOG_LEVEL": "WARNING",
            **FAST_SENDERS,
            **(env or {}),
        }
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wedsync.cli", "api", env=child_env, stdout=out, stderr=err
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
        if output is not None:
            readers.append(asyncio.create_task(_collect(procs[-1], output)))
    try:
        async with httpx.AsyncClient() as client:
            for url in urls:
                await wait_ready(client, url)
        yield list(zip(urls, procs, strict=True))
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        stuck = await _stopped(procs, STOP_WITHIN)
        await asyncio.gather(*readers)
    assert not stuck, f"`wedsync api` {stuck} did not stop within {STOP_WITHIN:g} s of SIGTERM"


STOP_WITHIN = 30.0  # shutdown timeout (3 s) + bounded drains of NATS and the pool


async def _stopped(procs: list[asyncio.subprocess.Process], within: float) -> list[int]:
    """Wait for the processes to exit; the pids of those that did not in ``within`` seconds
    (killed then, so a hung shutdown fails its test instead of hanging the suite)."""
    waits = {asyncio.ensure_future(p.wait()): p for p in procs}
    _, pending = await asyncio.wait(waits, timeout=within)
    for w in pending:
        waits[w].kill()
    if pending:
        await asyncio.wait(pending)
    return [waits[w].pid for w in pending]


async def _collect(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        lines.append(line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def running_gateways(
    settings: Settings, count: int = 2, env: dict[str, str] | None = None
) -> AsyncIterator[list[str]]:
    """``count`` `wedsync api` processes on free ports; yields their base URLs once ready."""
    async with gateway_processes(settings, count, env) as started:
        yield [url for url, _ in started]


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, name: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`wedsync worker NAME` on the session's services, stopped afterwards."""
    child_env = {**os.environ, **settings.to_env(), "WEDSYNC_LOG_LEVEL": "WARNING", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wedsync.cli", "worker", name, env=child_env
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        stuck = await _stopped([proc], STOP_WITHIN)
    assert not stuck, f"`wedsync worker {name}` did not stop within {STOP_WITHIN:g} s of SIGTERM"


# A check may answer None (or False) for "not yet": the value returned is the truthy one.
@overload
async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T: ...
@overload
async def eventually(check: Callable[[], T | None], timeout: float = 10.0) -> T: ...
async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll a predicate (sync or async) until it is truthy; its value. A condition wait
    with a deadline, for state that has no event to wait on (a mirror, a table)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def wait_ready(client: httpx.AsyncClient, url: str, attempts: int = 300) -> None:
    for _ in range(attempts):
        try:
            if (await client.get(f"{url}/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"gateway {url} not ready")


class World:
    """A wedding with members, driven over HTTP."""

    def __init__(self, settings: Settings, base: str) -> None:
        self.settings, self.base = settings, base
        self.couple = "couple-" + uuid.uuid4().hex[:8]
        self.wedding = ""

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + issue_token(self.settings.auth, user)}

    async def create(self) -> None:
        async with httpx.AsyncClient(base_url=self.base) as c:
            body = {"name": "W", "date": "2027-06-12", "timezone": "UTC"}
            r = await c.post("/api/weddings", headers=self.auth(self.couple), json=body)
            assert r.status_code == 201, r.text
            self.wedding = r.json()["id"]

    async def add(self, role: str) -> str:
        user = f"{role}-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=self.base) as c:
            r = await c.put(
                f"/api/weddings/{self.wedding}/members/{user}",
                headers=self.auth(self.couple),
                json={"role": role},
            )
            assert r.status_code == 200, r.text
        return user

    async def remove(self, user: str) -> None:
        async with httpx.AsyncClient(base_url=self.base) as c:
            r = await c.delete(
                f"/api/weddings/{self.wedding}/members/{user}", headers=self.auth(self.couple)
            )
            assert r.status_code == 204

    async def join(self, user: str) -> str:
        async with httpx.AsyncClient(base_url=self.base) as c:
            r = await c.post(f"/api/collaboration/join/{self.wedding}", headers=self.auth(user))
            assert r.status_code == 201, r.text
            token: str = r.json()["session_token"]
            return token


def ws_url(base: str, wedding: str, **params: Any) -> str:
    query = urlencode({k: str(v) for k, v in params.items()})
    return (
        base.replace("http", "ws", 1) + f"/ws/weddings/{wedding}" + (f"?{query}" if query else "")
    )


def subprotocols(token: str) -> list[Subprotocol]:
    """The token in ``Sec-WebSocket-Protocol``, as browsers can send it (docs/protocol.md)."""
    return [Subprotocol(SUBPROTOCOL), Subprotocol(TOKEN_PREFIX + token)]


async def connect(
    base: str,
    wedding: str,
    token: str,
    after: int | None = None,
    *,
    auth: str = "subprotocol",
    **params: Any,
) -> ClientConnection:
    """A raw socket authenticated as ``auth`` says: the token in the subprotocol header,
    as a first ``auth`` frame (``"frame"``) or in the URL (``"query"``: the legacy way)."""
    if after is not None:
        params["after_seq"] = after
    if auth == "query":
        params["token"] = token
    offered = subprotocols(token) if auth == "subprotocol" else None
    ws = await websockets.connect(
        ws_url(base, wedding, **params), max_size=2**24, subprotocols=offered
    )
    if auth == "frame":
        await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


async def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    while True:
        f = await recv(ws, timeout)
        if f["type"] == kind:
            return f


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))
