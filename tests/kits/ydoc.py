"""A y-websocket client in Python on pycrdt: what a stock ``WebsocketProvider`` does on
the wire (sync step 1 on open, step 2 in reply, updates, awareness), for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import websockets
from pycrdt import Doc, Text, create_awareness_message, create_sync_message, write_message
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.documents.sync import (
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    STEP1,
    STEP2,
    AwarenessEntry,
    awareness_update,
    parse,
    read_awareness,
)
from tests.kits.world import World, subprotocols


def server_url(base: str, wedding: str) -> str:
    """The provider's ``serverUrl``: it appends ``/<room name>`` (the document's name)."""
    return base.replace("http", "ws", 1) + f"/ws/weddings/{wedding}/documents"


class YClient:
    """``async with YClient(base, wedding, name, token) as c``: synced once entered."""

    def __init__(
        self, base: str, wedding: str, name: str, token: str, doc: Doc[Any] | None = None
    ) -> None:
        self.url = f"{server_url(base, wedding)}/{name}"
        self.token = token
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.text = self.doc.get("content", type=Text)
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        self.awareness: dict[int, Any] = {}
        self.received: list[bytes] = []
        self.ws: ClientConnection | None = None
        self.closed: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> YClient:
        await self.open()
        await asyncio.wait_for(self.synced.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self.synced.clear()
        self.ws = await websockets.connect(self.url, subprotocols=subprotocols(self.token))
        self._task = asyncio.create_task(self._read(self.ws))
        with contextlib.suppress(ConnectionClosed):  # refused already: closed_with() says how
            await self.ws.send(create_sync_message(self.doc))  # our step 1

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def closed_with(self, timeout: float = 10) -> tuple[int, str]:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        assert self.closed is not None
        return self.closed

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for data in ws:
                assert isinstance(data, bytes)
                self.received.append(data)
                m = parse(data)
                if m.kind == MESSAGE_SYNC:
                    if m.step == STEP1:
                        diff = self.doc.get_update(m.payload)
                        await ws.send(bytes((MESSAGE_SYNC, STEP2)) + write_message(diff))
                    else:
                        self.doc.apply_update(m.payload)
                        if m.step == STEP2:
                            self.synced.set()
                        self.changed.set()
                elif m.kind == MESSAGE_AWARENESS:
                    for e in read_awareness(m.payload):
                        if e.gone:
                            self.awareness.pop(e.client_id, None)
                        else:
                            self.awareness[e.client_id] = json.loads(e.state)
                    self.changed.set()
        except ConnectionClosed:
            pass
        self.closed = (ws.close_code or 1006, ws.close_reason or "")

    async def edit(self, at: int, text: str) -> None:
        """Insert ``text`` at ``at`` and send the update (as the provider does on change)."""
        before = self.doc.get_state()
        self.text.insert(at, text)
        await self.send_update(self.doc.get_update(before))

    async def send_update(self, update: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(bytes((MESSAGE_SYNC, 2)) + write_message(update))

    async def announce(self, state: dict[str, Any], clock: int = 1) -> None:
        assert self.ws is not None
        entry = AwarenessEntry(self.doc.client_id, clock, json.dumps(state))
        await self.ws.send(create_awareness_message(awareness_update([entry])))

    async def until(self, check: Any, timeout: float = 10) -> None:
        """Wait until ``check()`` holds, woken by each message received."""

        async def wait() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def __str__(self) -> str:
        return str(self.text)


async def create_document(world: World, user: str, name: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.base) as c:
        return await c.post(
            f"/api/weddings/{world.wedding}/documents",
            headers=world.auth(user),
            json={"name": name},
        )


async def api(world: World, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.base) as c:
        return await c.request(
            method, f"/api/weddings/{world.wedding}/documents{path}", headers=world.auth(user), **kw
        )
