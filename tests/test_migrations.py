from __future__ import annotations

import asyncpg
import pytest

from runtime.db import MigrationError, migrate, shipped_migrations

pytestmark = pytest.mark.asyncio


async def test_applied_once_and_recorded(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in shipped_migrations()]
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY 1")
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.version, m.checksum) for m in shipped_migrations()
        ]
    finally:
        await conn.close()


async def test_changed_applied_migration_is_refused(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()
