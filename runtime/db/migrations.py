"""Versioned SQL migrations, applied in order, once, under an advisory lock.

A small runner rather than a library: the maintained asyncpg-native choices either pull in
SQLAlchemy (alembic) or are unmaintained. Files are ``sql/NNNN_name.sql``; each runs in its
own transaction and is recorded with its checksum, and an applied file that later changes
is refused rather than silently diverging.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from runtime.db.types import Conn

log = logging.getLogger(__name__)

_LOCK_KEY = 0x57ED_5_1C  # pg_advisory_lock key: one migrator at a time across processes
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the files shipped."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations() -> list[Migration]:
    out = []
    for entry in resources.files("runtime.db").joinpath("sql").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda mg: mg.version)
    if len({mg.version for mg in out}) != len(out):
        raise MigrationError("two migration files share a version number")
    return out


async def migrate(conn: Conn) -> list[int]:
    """Apply every shipped migration not yet recorded; return the versions applied."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        # only when missing: a role without DDL rights (the runtime's) then finds an
        # up-to-date schema with nothing to do, and fails on the first pending file
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for mg in shipped_migrations():
            if mg.version in done:
                if done[mg.version] != mg.checksum:
                    raise MigrationError(
                        f"migration {mg.version:04d}_{mg.name} changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(mg.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mg.version,
                    mg.name,
                    mg.checksum,
                )
            log.info("applied migration %04d_%s", mg.version, mg.name)
            applied.append(mg.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
