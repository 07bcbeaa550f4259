"""Running the notifications worker's parts in the test process (with an injected clock)
against the session's NATS and PostgreSQL and the local providers, and driving a wedding."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js.errors import NotFoundError

from config.settings import NotifySettings, Settings, WorkerSettings
from runtime.connections import Connections
from runtime.crypto import ContactCipher
from runtime.presence.table import PresenceTable
from streams.definitions import EVENTS, ConsumerSpec
from streams.subjects import wedding_wildcard
from tests.kits.providers import HttpProviders, SmtpServer
from tests.kits.world import World, connect, recv_type, send
from workers.notifications import Dispatcher, Escalator, Planner
from workers.runner import ConsumerRunner

VAPID_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)


class Clock:
    """An injected clock: starts at ``start`` and moves only when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def notify_settings(
    settings: Settings, smtp: SmtpServer, http: HttpProviders, **changes: Any
) -> NotifySettings:
    return dataclasses.replace(
        settings.notify,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        sms_base_url=http.base,
        sms_account_sid="AC123",
        sms_auth_token="token",
        sms_from="+15550000000",
        vapid_private_key=VAPID_PEM,
        **changes,
    )


@contextlib.asynccontextmanager
async def notifier(
    conns: Connections,
    settings: Settings,
    n: NotifySettings,
    wedding: str,
    clock: Clock,
    presence: PresenceTable | None = None,
) -> AsyncIterator[Dispatcher]:
    """Planner (a consumer of this wedding's events only), dispatcher and escalator."""
    spec = ConsumerSpec(
        durable=f"notify-{uuid.uuid4().hex[:10]}",
        stream=EVENTS.name,
        filter_subjects=(wedding_wildcard(wedding),),
    )
    assert settings.auth.data_key
    worker = WorkerSettings(
        max_deliveries=3, retry_base_delay=0.2, retry_max_delay=2, ack_wait=10, batch=16
    )
    try:
        async with (
            ConsumerRunner(conns.js, conns.pool, spec, Planner(n, presence, clock), worker),
            Dispatcher(
                conns.pool,
                conns.nc,
                conns.js,
                n,
                ContactCipher(settings.auth.data_key),
                clock,
                poll=0.05,
            ) as dispatcher,
            Escalator(conns.pool, n, clock, every=0.05),
        ):
            yield dispatcher
    finally:
        with contextlib.suppress(Exception):
            await conns.js.delete_consumer(EVENTS.name, spec.durable)


async def add_member(
    world: World,
    role: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
) -> str:
    user = f"{role}-{uuid.uuid4().hex[:8]}"
    body = {"role": role, "email": email, "phone": phone, "display_name": name}
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.put(
            f"/api/weddings/{world.wedding}/members/{user}",
            headers=world.auth(world.couple),
            json={k: v for k, v in body.items() if v is not None},
        )
        assert r.status_code == 200, r.text
    return user


async def say(
    world: World, user: str, channel: str, data: dict[str, Any], base: str | None = None
) -> int:
    """``user`` sends one message frame; its seq once acked."""
    token = await world.join(user)
    async with await connect(base or world.base, world.wedding, token) as ws:
        await recv_type(ws, "welcome")
        await send(ws, type="message", id="m-" + uuid.uuid4().hex[:8], channel=channel, data=data)
        ack = await recv_type(ws, "ack")
    seq: int = ack["seq"]
    return seq


async def api(world: World, method: str, path: str, user: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.base) as c:
        return await c.request(method, path, headers=world.auth(user), **kw)


async def deliveries(conns: Connections, wedding: str) -> list[dict[str, Any]]:
    async with conns.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT id, key, channel, category, user_id, status, reason, attempts, due_at,
                      webhook_id, event_id
               FROM deliveries WHERE wedding_id = $1 ORDER BY id""",
            uuid.UUID(wedding),
        )
    return [dict(r) for r in rows]


async def notifications_consumer_exists(conns: Connections) -> bool:
    """Whether the notifications worker's durable consumer exists (the worker is up)."""
    try:
        await conns.js.consumer_info(EVENTS.name, "notifications")
    except NotFoundError:
        return False
    return True
