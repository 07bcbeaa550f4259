"""A TCP relay between one process and the session's nats-server whose links can be cut:
only that process loses NATS (restarting nats-server would cut every process at once).

    relay = Relay(settings.nats.url)
    async with relay.serving() as url:  # give the process WEDSYNC_NATS_URL=url
        relay.cut()  # open links dropped, new ones refused ...
        relay.restore()  # ... until now
        relay.cut_after(b"$JS.API.DIRECT.GET")  # cut as soon as such a request went up
        relay.cut_after(b"$JS.API.DIRECT.GET", nth=2)  # ... at the second one
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class Relay:
    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 4222
        self.cut_off = False
        self.trigger: bytes | None = None  # cut once this has been forwarded upstream
        self._skip = 0  # occurrences of the trigger let through first
        self.tripped = asyncio.Event()  # set when the trigger cut the links
        self._open: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        try:
            yield f"nats://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            self.cut()
            server.close()
            await server.wait_closed()

    def cut(self) -> None:
        self.cut_off = True
        for w in self._open:
            w.transport.abort()  # what is still buffered is lost, as on a broken link

    def restore(self) -> None:
        self.cut_off = False

    def cut_after(self, trigger: bytes, nth: int = 1) -> None:
        """Cut (as :meth:`cut`) right after the ``nth`` chunk containing ``trigger`` went
        upstream: that request reaches the server, its reply never comes back."""
        self.trigger, self._skip = trigger, nth - 1
        self.tripped.clear()

    async def _link(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        if self.cut_off:
            down_w.transport.abort()
            return
        up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self._open |= {down_w, up_w}
        try:
            await asyncio.gather(self._pump(down_r, up_w, True), self._pump(up_r, down_w, False))
        finally:
            self._open -= {down_w, up_w}
            down_w.transport.abort()
            up_w.transport.abort()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
                if up and self.trigger is not None and self.trigger in data:
                    if self._skip > 0:
                        self._skip -= 1
                        continue
                    self.trigger = None
                    self.cut()
                    self.tripped.set()
        w.transport.abort()  # one direction ended: so does the other
