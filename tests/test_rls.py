"""Defence in depth (issue 22): the runtime role is least-privilege and row-level security
keeps every wedding's rows to that wedding, whatever a query's WHERE clause forgets.

Connected as the runtime role (what gateways and workers use): a query without a scope sees
no row of any wedding-scoped table; scoped to wedding A it cannot read, update, delete or
insert wedding B's rows; it cannot run DDL; it is no superuser and does not bypass RLS."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from app.weddings import store as wedding_store
from config.settings import Settings
from runtime.connections import Connections
from runtime.db import archive, scope

pytestmark = pytest.mark.asyncio

#: every table with a wedding's rows (delivery_attempts, document_snapshots and document_authors:
#: through their delivery or document)
SCOPED = [
    "weddings",
    "wedding_members",
    "sessions",
    "audit_log",
    "presence_minutes",
    "presence_days",
    "wedding_state",
    "entities",
    "approvals",
    "notifications",
    "deliveries",
    "delivery_attempts",
    "notification_preferences",
    "webhooks",
    "escalations",
    "event_archive",
    "archive_marks",
    "event_outbox",
    "outbox_published",
    "documents",
    "document_snapshots",
    "document_authors",
]
#: tables without a wedding: the workers' own bookkeeping, a user's push subscriptions
UNSCOPED = {
    "worker_consumed",
    "worker_failures",
    "push_subscriptions",
    "retention_runs",
    "schema_migrations",
}


@dataclass
class Wedding:
    id: uuid.UUID
    delivery_id: int
    document_id: uuid.UUID


#: tables whose rows belong to a wedding through another row (column, Wedding attribute)
THROUGH = {
    "delivery_attempts": ("delivery_id", "delivery_id"),
    "document_snapshots": ("document_id", "document_id"),
    "document_authors": ("document_id", "document_id"),
}


async def _seed(owner: asyncpg.Connection[Any], user: str) -> Wedding:
    """One row of the wedding in every scoped table, written as the owner."""
    w = uuid.uuid4()
    await owner.execute(
        "INSERT INTO weddings (id, name, date, timezone, created_by) "
        "VALUES ($1, 'W', '2027-06-01', 'UTC', $2)",
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO wedding_members (wedding_id, user_id, role, added_by) "
        "VALUES ($1, $2, 'couple', $2)",
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO sessions (id, wedding_id, user_id, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4, now() + interval '1 hour')",
        uuid.uuid4(),
        w,
        user,
        uuid.uuid4().bytes,
    )
    await owner.execute(
        "INSERT INTO audit_log (wedding_id, actor, action) VALUES ($1, $2, 'seeded')", w, user
    )
    await owner.execute(
        "INSERT INTO presence_minutes (wedding_id, user_id, day, present, active) "
        "VALUES ($1, $2, '2027-06-01', B'0'::bit(1500), B'0'::bit(1500))",
        w,
        user,
    )
    await owner.execute("INSERT INTO presence_days VALUES ($1, $2, '2027-06-01', 1, 1)", w, user)
    await owner.execute("INSERT INTO wedding_state (wedding_id) VALUES ($1)", w)
    await owner.execute(
        "INSERT INTO entities (wedding_id, kind, entity_id, version, fields, field_versions, "
        "field_authors, created_by, updated_by) VALUES ($1, 'task', 't1', 1, '{}', '{}', '{}', "
        "$2, $2)",
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO approvals (id, wedding_id, change, requested_by, requested_at, expires_at) "
        "VALUES ($1, $2, '{}', $3, now(), now() + interval '1 day')",
        uuid.uuid4(),
        w,
        user,
    )
    nid = uuid.uuid4()
    await owner.execute(
        "INSERT INTO notifications (id, wedding_id, user_id, event_id, event_seq, event_type, "
        "category, title, body, created_at) "
        "VALUES ($1, $2, $3, $4, 1, 't', 'c', 'title', 'body', now())",
        nid,
        w,
        user,
        uuid.uuid4().hex,
    )
    delivery = await owner.fetchval(
        "INSERT INTO deliveries (key, wedding_id, notification_id, channel, category, due_at, "
        "created_at) VALUES ($1, $2, $3, 'email', 'c', now(), now()) RETURNING id",
        uuid.uuid4().hex,
        w,
        nid,
    )
    await owner.execute(
        "INSERT INTO delivery_attempts VALUES ($1, 1, now(), 'sent', NULL)", delivery
    )
    await owner.execute(
        "INSERT INTO notification_preferences (wedding_id, user_id, prefs) VALUES ($1, $2, '{}')",
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO webhooks (id, wedding_id, url, events, secret_enc, created_by) "
        "VALUES ($1, $2, 'https://example.com/h', '{*}', '\\x00', $3)",
        uuid.uuid4(),
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO escalations (event_id, wedding_id, next_at) VALUES ($1, $2, now())",
        uuid.uuid4().hex,
        w,
    )
    await archive.insert(
        owner,
        [
            archive.Archived(
                w, int(uuid.uuid4().int % 2**40), "chat", dt.datetime.now(dt.UTC), b"{}"
            )
        ],
    )
    await owner.execute("INSERT INTO archive_marks (wedding_id) VALUES ($1)", w)
    await owner.execute(
        "INSERT INTO event_outbox (partition, wedding_id, subject, msg_id, payload) "
        "VALUES (0, $1, 's', $2, '\\x00')",
        w,
        uuid.uuid4().hex,
    )
    await owner.execute("INSERT INTO outbox_published VALUES ($1, 1)", w)
    doc = uuid.uuid4()
    await owner.execute(
        "INSERT INTO documents (id, wedding_id, name, created_by) VALUES ($1, $2, 'notes', $3)",
        doc,
        w,
        user,
    )
    await owner.execute(
        "INSERT INTO document_snapshots (document_id, seq, state) VALUES ($1, 1, '\\x00')", doc
    )
    await owner.execute("INSERT INTO document_authors VALUES ($1, 1, $2, 1)", doc, user)
    return Wedding(w, delivery, doc)


def _key(table: str) -> str:
    return "id" if table == "weddings" else "wedding_id"


async def _visible(conn: Any, table: str, w: Wedding) -> int:
    """Rows of wedding ``w`` in ``table`` that ``conn`` sees (asked by its id: no WHERE
    clause of ours is missing, only the scope)."""
    if table in THROUGH:
        column, attr = THROUGH[table]
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {column} = $1", getattr(w, attr)
            )
        )
    return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {_key(table)} = $1", w.id))


@pytest_asyncio.fixture(scope="module")
async def two(conns: Connections) -> AsyncIterator[tuple[Wedding, Wedding]]:
    async with conns.pool.acquire() as owner:
        a = await _seed(owner, "rls-a-" + uuid.uuid4().hex[:6])  # type: ignore[arg-type]
        b = await _seed(owner, "rls-b-" + uuid.uuid4().hex[:6])  # type: ignore[arg-type]
    yield a, b
    async with conns.pool.acquire() as owner:
        await owner.execute("DELETE FROM weddings WHERE id = ANY($1::uuid[])", [a.id, b.id])


async def test_the_owner_sees_every_seeded_row(
    conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    a, _ = two
    async with conns.pool.acquire() as owner:
        for table in SCOPED:
            assert await _visible(owner, table, a) >= 1, table


async def test_without_a_scope_no_row_of_any_scoped_table_is_seen(
    runtime_conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    a, b = two
    async with runtime_conns.pool.acquire() as conn:
        for table in SCOPED:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
            assert await _visible(conn, table, a) == 0, table
        # nor can it change any: an UPDATE or DELETE finds nothing
        assert await conn.execute("UPDATE weddings SET name = 'taken'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM entities") == "DELETE 0"
    async with runtime_conns.pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO audit_log (wedding_id, actor, action) VALUES ($1, 'x', 'forged')", b.id
            )


async def test_scoped_to_a_wedding_b_cannot_be_read_or_written(
    runtime_conns: Connections, conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    a, b = two
    with scope.wedding(a.id):
        async with runtime_conns.pool.acquire() as conn:
            for table in SCOPED:
                assert await _visible(conn, table, a) >= 1, table  # its own rows: all there
                assert await _visible(conn, table, b) == 0, table
            # a query that forgot its WHERE clause still stays inside A
            ids = {r["wedding_id"] for r in await conn.fetch("SELECT wedding_id FROM entities")}
            assert ids == {a.id}
            # B's rows: updates and deletes find nothing
            for table in SCOPED:
                if table in THROUGH:
                    column, attr = THROUGH[table]
                    status = await conn.execute(
                        f"DELETE FROM {table} WHERE {column} = $1", getattr(b, attr)
                    )
                else:
                    status = await conn.execute(
                        f"DELETE FROM {table} WHERE {_key(table)} = $1", b.id
                    )
                assert status == "DELETE 0", table
            assert (
                await conn.execute(
                    "UPDATE wedding_members SET role = 'guest' WHERE wedding_id = $1", b.id
                )
                == "UPDATE 0"
            )
            assert (
                await conn.execute(
                    "DELETE FROM delivery_attempts WHERE delivery_id = $1", b.delivery_id
                )
                == "DELETE 0"
            )
            # nor may a row of A be moved into B, or one written for B
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    await conn.execute(
                        "UPDATE entities SET wedding_id = $2 WHERE wedding_id = $1", a.id, b.id
                    )
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    await conn.execute(
                        "INSERT INTO wedding_members (wedding_id, user_id, role, added_by) "
                        "VALUES ($1, 'intruder', 'planner', 'intruder')",
                        b.id,
                    )
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    await conn.execute(
                        "INSERT INTO delivery_attempts VALUES ($1, 99, now(), 'sent', NULL)",
                        b.delivery_id,
                    )
    # B is untouched, as the owner sees it
    async with conns.pool.acquire() as owner:
        for table in SCOPED:
            assert await _visible(owner, table, b) >= 1, table
        assert (
            await owner.fetchval("SELECT count(*) FROM wedding_members WHERE user_id = 'intruder'")
            == 0
        )


async def test_enter_narrows_a_system_connection_to_one_wedding(
    runtime_conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    a, b = two
    with scope.system("test: a worker's connection"):
        async with runtime_conns.pool.acquire() as conn:
            assert await _visible(conn, "entities", a) == await _visible(conn, "entities", b) == 1
            async with conn.transaction():
                await scope.enter(conn, a.id)
                assert await _visible(conn, "entities", a) == 1
                assert await _visible(conn, "entities", b) == 0
            # the transaction over: back to the connection's scope
            assert await _visible(conn, "entities", b) == 1


def _one_connection(settings: Settings) -> Settings:
    """The same settings with a pool of exactly one connection: the next acquire is
    certainly the connection just released."""
    database = dataclasses.replace(settings.database, pool_min=1, pool_max=1)
    return dataclasses.replace(settings, database=database)


async def test_a_released_connection_keeps_no_scope(
    settings: Settings, conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    """The pool's reset clears the scope: the next task borrowing it starts with none, or
    with its own (wedding A, then system, then wedding B on one server connection)."""
    a, b = two
    from runtime.connections import connect

    async with connect(_one_connection(settings), name="tests-one-connection") as one:
        with scope.wedding(a.id):
            async with one.pool.acquire() as conn:
                assert await _visible(conn, "weddings", a) == 1
                pid = conn.get_server_pid()
        async with one.pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same server connection, reused
            assert await _visible(conn, "weddings", a) == 0
            assert await conn.fetchval("SELECT current_setting('wedsync.wedding_id', true)") in (
                None,
                "",
            )
        with scope.system("test: every wedding"):
            async with one.pool.acquire() as conn:
                assert await _visible(conn, "weddings", a) == 1
        with scope.wedding(b.id):
            async with one.pool.acquire() as conn:
                assert conn.get_server_pid() == pid
                assert await _visible(conn, "weddings", a) == 0
                assert await _visible(conn, "weddings", b) == 1


class NoResetAll(asyncpg.Connection):
    """What asyncpg sends on release to a server without ``RESET`` (CockroachDB): the same
    reset query less ``RESET ALL``, so settings survive the release."""

    def get_reset_query(self) -> str:
        return "\n".join(q for q in super().get_reset_query().split("\n") if q != "RESET ALL;")


async def test_a_released_connection_keeps_no_scope_where_the_reset_keeps_settings(
    settings: Settings, two: tuple[Wedding, Wedding]
) -> None:
    a, _ = two
    assert settings.database.url is not None
    async with asyncpg.create_pool(
        settings.database.url,
        min_size=1,
        max_size=1,
        setup=scope.on_acquire,
        connection_class=NoResetAll,
    ) as one:
        with scope.wedding(a.id):
            async with one.acquire() as conn:
                assert not scope.clears_on_release(conn)
                assert await _visible(conn, "weddings", a) == 1
                pid = conn.get_server_pid()
        async with one.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same server connection, reused
            assert await _visible(conn, "weddings", a) == 0


async def test_a_released_connection_holds_no_advisory_lock(
    settings: Settings, conns: Connections
) -> None:
    """A lock a task took and did not release goes with its connection's release: another
    process can take it at once (the outbox relay's standby relies on this)."""
    from runtime.connections import connect

    key = 0x57ED_7E57
    async with connect(_one_connection(settings), name="tests-one-connection") as one:
        async with one.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        async with conns.pool.acquire() as other:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
            await other.execute("SELECT pg_advisory_unlock($1)", key)


async def test_a_wedding_created_at_the_edge_is_its_own_scope(runtime_conns: Connections) -> None:
    async with runtime_conns.pool.acquire() as conn, conn.transaction():
        m = await wedding_store.create(
            conn,
            name="Scoped",
            date=dt.date(2027, 7, 1),
            timezone="UTC",
            creator="rls-c",
            display_name=None,
            email=None,
        )
        assert m.wedding_id and m.role == "couple"
    async with runtime_conns.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM weddings WHERE id = $1", m.wedding_id) == 0
    with scope.wedding(m.wedding_id):
        async with runtime_conns.pool.acquire() as conn:
            assert await wedding_store.membership(conn, m.wedding_id, "rls-c") is not None
            await conn.execute("DELETE FROM weddings WHERE id = $1", m.wedding_id)


async def test_archive_partitions_come_from_the_owner_function(
    runtime_conns: Connections, conns: Connections
) -> None:
    """The runtime's one DDL goes through a SECURITY DEFINER function; the partition it
    makes is no table the runtime may read directly (it has no policy of its own)."""
    w = uuid.uuid4()
    at = dt.datetime(2011, 3, 4, tzinfo=dt.UTC)  # a month no other test archives
    async with conns.pool.acquire() as owner:
        await owner.execute(
            "INSERT INTO weddings (id, name, date, timezone, created_by) "
            "VALUES ($1, 'P', '2027-06-01', 'UTC', 'rls-p')",
            w,
        )
    try:
        with scope.wedding(w):
            async with runtime_conns.pool.acquire() as conn, conn.transaction():
                assert await archive.insert(conn, [archive.Archived(w, 7, "chat", at, b"{}")]) == 1
            async with runtime_conns.pool.acquire() as conn:
                assert await archive.between(conn, w, 0, 10, 10) == [(7, "chat", b"{}")]
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {archive.partition_name(at.date())}")
    finally:
        async with conns.pool.acquire() as owner:
            await owner.execute("DELETE FROM event_archive WHERE wedding_id = $1", w)
            await owner.execute("DELETE FROM weddings WHERE id = $1", w)


async def test_the_runtime_role_is_least_privilege(runtime_conns: Connections) -> None:
    async with runtime_conns.pool.acquire() as conn:
        me = await conn.fetchrow(
            """SELECT rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolreplication
               FROM pg_roles WHERE rolname = current_user"""
        )
        assert me is not None and not any(me.values()), me
        # nor through a role it is a member of
        assert not await conn.fetchval(
            """SELECT bool_or(r.rolsuper OR r.rolbypassrls) FROM pg_roles r
               WHERE pg_has_role(current_user, r.oid, 'MEMBER')"""
        )
        assert not await conn.fetchval(
            "SELECT bool_or(tableowner = current_user) FROM pg_tables WHERE schemaname = 'public'"
        )
        assert not await conn.fetchval("SELECT has_schema_privilege('public', 'CREATE')")
        assert not await conn.fetchval(
            "SELECT has_database_privilege(current_database(), 'CREATE')"
        )
        refused = [
            "CREATE TABLE rls_probe (x int)",
            "CREATE SCHEMA rls_probe",
            "CREATE FUNCTION rls_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "ALTER TABLE weddings ADD COLUMN rls_probe int",
            "ALTER TABLE entities DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE entities NO FORCE ROW LEVEL SECURITY",
            "DROP POLICY wedding_scope ON entities",
            "DROP TABLE sessions",
            "TRUNCATE audit_log",
            "CREATE INDEX rls_probe ON entities (kind)",
            "SET ROLE postgres",
            "SET session_replication_role = replica",  # would skip triggers, FKs
        ]
        for sql in refused:
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)


async def test_every_wedding_table_is_protected_and_granted(conns: Connections) -> None:
    """A migration adding a table must grant it and, if it holds a wedding's rows, force
    RLS on it: this lists what was forgotten."""
    async with conns.pool.acquire() as owner:
        rows = await owner.fetch(
            """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                      EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid) AS policy,
                      EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid
                              AND a.attname = 'wedding_id' AND NOT a.attisdropped) AS scoped,
                      has_table_privilege('wedsync_runtime', c.oid, 'SELECT') AS granted
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"""
        )
    tables = {r["relname"]: r for r in rows}
    assert set(tables) == set(SCOPED) | UNSCOPED, "a new table: add it to SCOPED or UNSCOPED"
    for name in SCOPED:
        r = tables[name]
        assert r["relrowsecurity"] and r["relforcerowsecurity"] and r["policy"], name
    for name, r in tables.items():
        assert r["granted"], name
        if r["scoped"]:
            assert name in SCOPED, name


async def test_a_token_of_another_wedding_is_told_apart_from_none(
    runtime_conns: Connections, two: tuple[Wedding, Wedding]
) -> None:
    """The handshake's lookup before the wedding is known: the wedding of a live session's
    token (only), from a connection scoped to another wedding."""
    from app.sessions import store as session_store

    a, b = two
    async with runtime_conns.pool.acquire() as conn:
        assert await session_store.wedding_of_token(conn, "no such token") is None
    with scope.wedding(b.id):
        async with runtime_conns.pool.acquire() as conn, conn.transaction():
            created, _ = await session_store.create(
                conn, b.id, "rls-b-user", ttl=60, cap=5, fingerprint=None, ip=None, user_agent=None
            )
    token = created.token
    with scope.wedding(a.id):
        async with runtime_conns.pool.acquire() as conn:
            assert await session_store.by_token(conn, token) is None  # not A's
            assert await session_store.wedding_of_token(conn, token) == b.id
            assert await conn.fetchval("SELECT current_setting('wedsync.scope', true)") in (
                "",
                None,
            )
