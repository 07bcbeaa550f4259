"""What one open socket's tasks share: the socket, its connection, the process's hub and
connections, and the tasks it spawned (the reader, the session check at expiry, resumes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from litestar import WebSocket

from app.gateway.connection import Connection
from app.gateway.hub import Hub
from config.settings import GatewaySettings, Settings
from runtime.connections import Connections
from streams.protocol import Close

log = logging.getLogger(__name__)

SERVER_ERROR = "internal error: reconnect and resume"  # the reason of every 4002 close


@dataclass(eq=False)
class SocketContext:
    """Handed to the reader, the frame handlers and resumes instead of their parameters."""

    socket: WebSocket[Any, Any, Any]
    conns: Connections
    hub: Hub
    conn: Connection
    settings: Settings
    # the socket's tasks but the writer: cancelled when it closes
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def gateway(self) -> GatewaySettings:
        return self.settings.gateway

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as one of the socket's tasks (:func:`guarded`)."""
        t = asyncio.create_task(guarded(self.conn, what, coro))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)


async def guarded(conn: Connection, what: str, coro: Coroutine[Any, Any, None]) -> None:
    """One of the socket's tasks. A failure is logged and closes the socket with 4002
    (reconnect and resume), never silently; cancellation is not a failure and propagates."""
    try:
        await coro
    except Exception:
        log.exception("websocket %s failed", what)
        conn.request_close(Close.SERVER_ERROR, SERVER_ERROR)
