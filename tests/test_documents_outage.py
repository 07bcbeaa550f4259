"""Live documents across a NATS restart: the document rooms of both gateway processes
re-create their update consumers (app/documents/rooms.py ``resubscribe``), so an edit made
after NATS came back reaches the editor on the other process without anyone reconnecting.

Its own system (bench/faults): its own nats-server and PostgreSQL, stopped and started
again on the same port and data; the session's servers are not touched."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.faults import FaultSystem
from tests.kits.world import World, wait_ready
from tests.kits.ydoc import YClient, create_document

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_rooms_resubscribe_after_a_nats_restart(tmp_path: Path) -> None:
    async with FaultSystem(tmp_path, workers=()) as system:
        world = World(system.settings, system.urls[0])
        await world.create()
        planner = await world.add("planner")
        assert (await create_document(world, world.couple, "notes")).status_code == 201
        a_token, b_token = await world.join(world.couple), await world.join(planner)
        async with (
            YClient(system.urls[0], world.wedding, "notes", a_token) as a,
            YClient(system.urls[1], world.wedding, "notes", b_token) as b,
        ):
            await a.edit(0, "before. ")
            await b.until(lambda: str(b) == "before. ")
            await system.services.stop("nats", "stop")
            await system.services.start("nats")
            async with httpx.AsyncClient() as c:  # both gateways answer again (NATS too)
                for url in system.urls:
                    await wait_ready(c, url, attempts=600)
            # the sockets stayed open (no frame was sent meanwhile): once the gateways are
            # back on NATS, an edit is stored and reaches the other process's room
            await a.edit(len(str(a)), "after.")
            await b.until(lambda: str(b) == "before. after.", timeout=30)
            await b.edit(0, "b: ")
            await a.until(lambda: str(a) == "b: before. after.", timeout=30)
