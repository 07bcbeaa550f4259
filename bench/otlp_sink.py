"""A local OTLP/HTTP receiver for `fanout --tracing`: accepts every export, keeps counts
only, so the gateways pay the real exporter's cost (protobuf encoding, HTTP POSTs) and
the measurement is tracing on vs off, not a backend's speed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from wedsync.embedded.process import free_port


@dataclass
class Sink:
    port: int
    requests: int = 0
    bytes: int = 0

    def env(self) -> dict[str, str]:
        """The gateways' environment: the caller's OTEL_* (a sampler, say), then the sink."""
        return {
            **{k: v for k, v in os.environ.items() if k.startswith("OTEL_")},
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
        }


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[Sink]:
    sink = Sink(free_port())

    async def accept(request: web.Request) -> web.Response:
        sink.requests += 1
        sink.bytes += len(await request.read())
        return web.Response(content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1/traces", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sink.port).start()
    try:
        yield sink
    finally:
        await runner.cleanup()
