"""The access log of ``wedsync api``, in place of uvicorn's: one line per HTTP request and
per WebSocket with the method, the path, the status and the duration.

Never the query string: a legacy WebSocket client sends its session token as ``?token=``
(docs/protocol.md), and a token read from a log opens a live session. Nor headers (the
``Sec-WebSocket-Protocol`` header carries a token too).

    127.0.0.1:51514 - "GET /api/weddings/<id>" 200 3.1 ms
    127.0.0.1:51520 - "WebSocket /ws/weddings/<id>" 101 close 4500 0.02 s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("wedsync.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # Litestar's own signature is stricter


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLog:
    """ASGI middleware around the whole application (404s and refused sockets included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and log.isEnabledFor(logging.INFO):
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket" and log.isEnabledFor(logging.INFO):
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, status = time.perf_counter(), 500  # no response started: the server's 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(
                '%s - "%s %s" %d %.1f ms',
                _client(scope),
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, status, closed = time.perf_counter(), 403, 1006  # refused / dropped

        async def sending(message: Message) -> None:
            nonlocal status, closed
            if message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.close":
                closed = message.get("code", 1000)
            await send(message)

        async def receiving() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.disconnect" and closed == 1006:
                closed = message.get("code", 1006)  # the client closed first
            return message

        try:
            await self.app(scope, receiving, sending)
        finally:
            log.info(
                '%s - "WebSocket %s" %d close %d %.2f s',
                _client(scope),
                scope["path"],
                status,
                closed,
                time.perf_counter() - started,
            )
