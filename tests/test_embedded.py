"""The embedded runtime: data survives a restart, and one data dir serves one system."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import nats
import pytest

from config.settings import Settings
from streams import EVENTS, ensure_streams, wedding_subject
from wedsync.embedded import EmbeddedError, data_dir_lock, embedded_services

pytestmark = pytest.mark.asyncio


async def test_restart_keeps_jetstream_messages_and_rows(tmp_path: Path) -> None:
    settings = Settings.from_env({"WEDSYNC_DATA_DIR": str(tmp_path / "data")})
    subject = wedding_subject(uuid.uuid4(), "chat")

    async with embedded_services(settings) as live:
        assert live.nats.url and live.database.url  # embedded_services fills both in
        nc = await nats.connect(live.nats.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, replicas=1)
            ack = await js.publish(subject, b"the cake is ordered")
        finally:
            await nc.close()
        conn = await asyncpg.connect(live.database.url)
        try:
            await conn.execute("CREATE TABLE notes (body text)")
            await conn.execute("INSERT INTO notes VALUES ('first dance: 21:00')")
        finally:
            await conn.close()
        first_urls = (live.nats.url, live.database.url)

    async with embedded_services(settings) as live:
        assert live.nats.url and live.database.url  # embedded_services fills both in
        nc = await nats.connect(live.nats.url)
        try:
            msg = await nc.jetstream().get_msg(EVENTS.name, ack.seq)
            assert msg.data == b"the cake is ordered" and msg.subject == subject
        finally:
            await nc.close()
        conn = await asyncpg.connect(live.database.url)
        try:
            assert await conn.fetchval("SELECT body FROM notes") == "first dance: 21:00"
        finally:
            await conn.close()
    assert first_urls[1].split("@")[0] == live.database.url.split("@")[0]  # same credentials


async def test_a_data_dir_serves_one_system_at_a_time(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path), pytest.raises(EmbeddedError, match="in use by pid"):
        settings = Settings.from_env({"WEDSYNC_DATA_DIR": str(tmp_path)})
        async with embedded_services(settings):
            pass


async def test_configured_urls_start_nothing(settings: Settings) -> None:
    async with embedded_services(settings) as live:
        assert live is settings
