"""Liveness, readiness and the OpenAPI document, through the real app factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from app.factory import create_app
from config.settings import Settings
from wedsync.embedded import EmbeddedNats

pytestmark = pytest.mark.asyncio


async def test_ready_when_nats_streams_and_database_are(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ready",
            "checks": {"nats": "ok", "streams": "ok", "database": "ok"},
        }
        spec = await client.get("/schema/openapi.json")
        assert spec.status_code == 200
        assert "/readyz" in spec.json()["paths"]


async def test_not_ready_with_a_reason_when_nats_goes_away(
    settings: Settings, tmp_path: Path
) -> None:
    async with EmbeddedNats(tmp_path / "nats") as own_nats:
        mine = dataclasses.replace(
            settings, nats=dataclasses.replace(settings.nats, url=own_nats.url)
        )
        async with AsyncTestClient(app=create_app(mine)) as client:
            assert (await client.get("/readyz")).status_code == 200
            await own_nats.stop()
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "not_ready"
            assert body["checks"]["nats"] != "ok"
            assert body["checks"]["database"] == "ok"


async def test_unknown_route_is_a_json_error(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        r = await client.get("/nope")
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
