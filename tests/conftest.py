"""Real nats-server and PostgreSQL for the whole session, on free ports.

Set WEDSYNC_NATS_URL and WEDSYNC_DATABASE_URL (and WEDSYNC_MIGRATE_DATABASE_URL, the owner
role) to run the suite against servers you started; otherwise the embedded ones (the same
code `wedsync dev` uses) are started once.

As in production, ``settings`` (what gateway and worker processes get) names the
least-privilege runtime role, under row-level security; ``conns``, the pool tests set up
and inspect data with, is the owner's (the embedded superuser: RLS does not apply to it).
``runtime_conns`` is the runtime role's pool, for tests of what it may do.
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
    migrate_url = os.environ.get("WEDSYNC_MIGRATE_DATABASE_URL") or None
    async with contextlib.AsyncExitStack() as stack:
        if not nats_url:
            nats_url = (await stack.enter_async_context(EmbeddedNats(session_dir / "nats"))).url
        if not db_url:
            pg = await stack.enter_async_context(EmbeddedPostgres(session_dir / "postgres"))
            db_url, migrate_url = pg.service_url, pg.url
        yield base.with_services(nats_url, db_url, migrate_url)


def owner_url(settings: Settings) -> str:
    """The owner role's DSN (migrations, test setup): the migrate URL, else the one URL."""
    url = settings.database.migrate_url or settings.database.url
    assert url is not None
    return url


def as_owner(settings: Settings) -> Settings:
    """``settings`` whose pool is the owner's."""
    assert settings.nats.url is not None
    return settings.with_services(settings.nats.url, owner_url(settings))


@pytest_asyncio.fixture(scope="session")
async def conns(settings: Settings) -> AsyncIterator[Connections]:
    """The owner's pool (schema migrated): test setup and inspection see every wedding."""
    async with connect(as_owner(settings), name="tests") as c:
        await prepare(c, settings)
        yield c


@pytest_asyncio.fixture(scope="session")
async def runtime_conns(settings: Settings, conns: Connections) -> AsyncIterator[Connections]:
    """The runtime role's pool, as the app and workers have it (after ``conns`` migrated)."""
    async with connect(settings, name="tests-runtime") as c:
        yield c


@pytest_asyncio.fixture
async def fresh_database(settings: Settings) -> AsyncIterator[str]:
    """A new empty database on the same server, dropped afterwards; yields its DSN."""
    assert settings.database.url is not None
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(owner_url(settings))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = owner_url(settings).rpartition("/")
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
