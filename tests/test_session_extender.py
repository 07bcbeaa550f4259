"""The gateway's batched session extension (app/gateway/session.py, ``Extender``), against
the real PostgreSQL as the runtime role: the sessions its sockets used are extended in one
statement, across weddings; a socket whose session ended meanwhile is closed with 4500."""

from __future__ import annotations

import time
import uuid

import pytest

from app.gateway.connection import Connection
from app.gateway.session import Extender
from app.gateway.tracker import Presence
from runtime.connections import Connections
from streams.permissions import Role, WeddingStatus
from streams.protocol import Close
from tests.kits.world import World

pytestmark = pytest.mark.asyncio


async def socket_of(conns: Connections, world: World) -> Connection:
    """A socket's connection for a fresh session of the world's couple."""
    await world.join(world.couple)
    row = await conns.pool.fetchrow(
        "SELECT id, expires_at FROM sessions WHERE wedding_id = $1 ORDER BY created_at DESC",
        uuid.UUID(str(world.wedding)),
    )
    assert row is not None
    session_id, expires = row["id"], row["expires_at"]
    wedding = str(world.wedding)
    conn = Connection(
        wedding_id=uuid.UUID(wedding),
        session_id=session_id,
        user_id=world.couple,
        role=Role.COUPLE,
        status=WeddingStatus.PLANNING,
        queue_size=8,
        presence=Presence(wedding, str(session_id), world.couple, Role.COUPLE, None),
    )
    conn.expires_at = expires.timestamp()
    return conn


async def expiry_of(conns: Connections, conn: Connection) -> float:
    value = await conns.pool.fetchval(
        "SELECT expires_at FROM sessions WHERE id = $1", conn.session_id
    )
    return float(value.timestamp())


async def test_sockets_of_several_weddings_are_extended_in_one_statement(
    conns: Connections, runtime_conns: Connections, world: World, gateways: list[str]
) -> None:
    other = World(world.settings, gateways[0])
    await other.create()
    a, b, ended = (
        await socket_of(conns, world),
        await socket_of(conns, other),
        await socket_of(conns, world),
    )
    await conns.pool.execute("UPDATE sessions SET ended_at = now() WHERE id = $1", ended.session_id)
    ttl = 10 * 24 * 3600.0  # longer than the join's own TTL: the extension is visible
    async with Extender(runtime_conns.pool, ttl) as extender:
        for conn in (a, b, ended):
            extender.queue(conn)
        before = time.time()
        await extender.flush()
        assert extender.statements == 1
    for conn in (a, b):
        assert await expiry_of(conns, conn) >= before + ttl - 5
        assert conn.expires_at >= before + ttl - 5 and not conn.closed
    assert ended.closed and ended.close_code == Close.INVALID_SESSION
