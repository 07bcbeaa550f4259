"""Webhook destinations are public addresses only (issue 22, finding 4): loopback,
link-local (the cloud metadata address), private and unresolvable hosts are refused at
registration, and at send time against the address the dispatcher connects to, with one
message that tells nothing about what listens there (no internal port scanner).

This module's gateways run with ``WEDSYNC_WEBHOOK_ALLOW_PRIVATE=false`` (the suite's default
is true, for the local receivers)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from config.settings import Settings
from runtime.connections import Connections
from runtime.destination import REFUSED
from tests.kits.notifykit import Clock, api, deliveries, notifier, notify_settings, say
from tests.kits.providers import HttpProviders, SmtpServer, providers
from tests.kits.world import World, eventually, running_gateways
from wedsync.embedded.process import free_port

STRICT = {"WEDSYNC_WEBHOOK_ALLOW_PRIVATE": "false"}


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return STRICT


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[SmtpServer, HttpProviders]]:
    async with providers() as found:
        yield found


def hooks(world: World) -> str:
    return f"/api/weddings/{world.wedding}/webhooks"


async def test_private_destinations_are_refused_at_registration(
    world: World, servers: tuple[SmtpServer, HttpProviders]
) -> None:
    _, http = servers
    messages = set()
    for url in (
        f"{http.base}/hooks/live",
        "http://localhost:8000/x",
        "http://127.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://100.64.0.1/x",
        "http://[::1]:8000/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "http://2130706433/x",
        "http://0x7f.0.0.1/x",
        "http://0.0.0.0/x",
        "https://no-such-host.invalid/x",
    ):
        r = await api(world, "POST", hooks(world), world.couple, json={"url": url})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["code"] == "invalid"
        messages.add(r.json()["message"])
    assert len(messages) == 1, "one answer for every refusal: no probing of internal names"
    r = await api(world, "GET", hooks(world), world.couple)
    assert r.json() == []


async def test_send_time_guard_refuses_without_telling_reachability(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    """Endpoints that were accepted (a deployment that allowed private addresses, or a name
    that resolved publicly then): a dispatcher that does not allow them sends nothing to
    either, and logs the same words for a listening and a closed port."""
    smtp, http = servers
    live, closed = f"/hooks/{uuid.uuid4().hex[:10]}", f"http://127.0.0.1:{free_port()}/x"
    ids = []
    async with running_gateways(settings, 1, {"WEDSYNC_WEBHOOK_ALLOW_PRIVATE": "true"}) as [lax]:
        lax_world = World(settings, lax)
        lax_world.couple, lax_world.wedding = world.couple, world.wedding
        for url in (http.base + live, closed):
            r = await api(lax_world, "POST", hooks(world), world.couple, json={"url": url})
            assert r.status_code == 201, r.text
            ids.append(uuid.UUID(r.json()["id"]))
    n = dataclasses.replace(notify_settings(settings, smtp, http), webhook_allow_private=False)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        await say(world, world.couple, "chat", {"text": "hello"})
        rows = await eventually(lambda: _dead(conns, world, ids))
    assert [r for r in http.webhooks if r.path == live] == [], "nothing reached the receiver"
    r = await api(
        world, "GET", f"/api/weddings/{world.wedding}/notifications/deliveries", world.couple
    )
    logged = {d["webhook_id"]: d for d in r.json()["deliveries"] if d.get("webhook_id")}
    errors = [[a["error"] for a in logged[str(i)]["attempts"]] for i in ids]
    assert errors == [[REFUSED], [REFUSED]], errors
    assert {row["status"] for row in rows} == {"dead"}
    listed = {h["id"]: h for h in (await api(world, "GET", hooks(world), world.couple)).json()}
    assert [listed[str(i)]["enabled"] for i in ids] == [False, False]


async def _dead(
    conns: Connections, world: World, ids: list[uuid.UUID]
) -> list[dict[str, Any]] | None:
    rows = [r for r in await deliveries(conns, world.wedding) if r["webhook_id"] in ids]
    return rows if len(rows) == len(ids) and all(r["status"] == "dead" for r in rows) else None
