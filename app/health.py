"""Liveness and readiness: is the process up, and can it serve (NATS, streams, database)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Response, get

from runtime.connections import Connections
from streams.definitions import missing_streams
from streams.schemas import Health, Readiness


class HealthController(Controller):
    tags = ["health"]  # noqa: RUF012  (Litestar reads it as a class attribute)

    @get("/healthz", summary="Alive")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get("/readyz", summary="Ready: NATS connected, streams present, database reachable")
    async def readyz(self, conns: Connections) -> Response[Any]:
        checks: dict[str, str] = {}
        checks["nats"] = "ok" if conns.nc.is_connected else "disconnected"
        try:
            missing = await missing_streams(conns.js)
            checks["streams"] = "ok" if not missing else "missing " + ",".join(missing)
        except Exception as exc:
            checks["streams"] = f"error: {type(exc).__name__}"
        try:
            async with conns.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return Response(
            Readiness(status="ready" if ok else "not_ready", checks=checks),
            status_code=200 if ok else 503,
            media_type=MediaType.JSON,
        )
