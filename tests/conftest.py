"""Real nats-server and PostgreSQL for the whole session, on free ports.

Set WEDSYNC_NATS_URL and WEDSYNC_DATABASE_URL to run the suite against servers you started;
otherwise the embedded ones (the same code `wedsync dev` uses) are started once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from config.settings import Settings, WorkerSettings
from runtime.connections import Connections, connect, prepare
from tests.kits.world import World, running_gateways
from wedsync.embedded import EmbeddedNats, EmbeddedPostgres


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest_asyncio.fixture(scope="session")
async def settings(session_dir: Path) -> AsyncIterator[Settings]:
    base = Settings.from_env(
        {
            "WEDSYNC_DATA_DIR": str(session_dir / "data"),
            "WEDSYNC_JWT_SECRET": secrets.token_urlsafe(32),
            "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
            "WEDSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),  # the server API (/api/admin)
            "WEDSYNC_METRICS_TOKEN": secrets.token_urlsafe(32),  # GET /metrics
            # generous: the suite makes many requests from one user and one IP
            "WEDSYNC_RATE_LIMIT_USER": "100000/minute",
            "WEDSYNC_RATE_LIMIT_IP": "100000/minute",
            # the providers stand on 127.0.0.1 (tests of the guard itself turn it off)
            "WEDSYNC_WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    nats_url = os.environ.get("WEDSYNC_NATS_URL")
    db_url = os.environ.get("WEDSYNC_DATABASE_URL")
    async with contextlib.AsyncExitStack() as stack:
        if not nats_url:
            nats_url = (await stack.enter_async_context(EmbeddedNats(session_dir / "nats"))).url
        if not db_url:
            pg = await stack.enter_async_context(EmbeddedPostgres(session_dir / "postgres"))
            db_url = pg.url
        yield base.with_services(nats_url, db_url)


@pytest_asyncio.fixture(scope="session")
async def conns(settings: Settings) -> AsyncIterator[Connections]:
    async with connect(settings, name="tests") as c:
        await prepare(c, settings)
        yield c


@pytest_asyncio.fixture
async def fresh_database(settings: Settings) -> AsyncIterator[str]:
    """A new empty database on the same server, dropped afterwards; yields its DSN."""
    assert settings.database.url is not None
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(settings.database.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = settings.database.url.rpartition("/")
        yield f"{base}/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def fast_retries() -> WorkerSettings:
    return WorkerSettings(
        max_deliveries=3, retry_base_delay=0.2, retry_max_delay=5, ack_wait=10, batch=8
    )


@pytest.fixture
def uid() -> Iterator[str]:
    yield uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    """Extra environment for the module's gateway processes (override per module)."""
    return {}


@pytest_asyncio.fixture(scope="module")
async def gateways(settings: Settings, gateway_env: dict[str, str]) -> AsyncIterator[list[str]]:
    """Two `wedsync api` processes sharing the session's NATS and PostgreSQL."""
    async with running_gateways(settings, 2, gateway_env) as urls:
        yield urls


@pytest_asyncio.fixture
async def world(settings: Settings, gateways: list[str]) -> World:
    """A new wedding created by its couple through the first gateway."""
    w = World(settings, gateways[0])
    await w.create()
    return w
