"""Per-wedding webhooks (docs/notifications.md, issue 7), end to end: endpoints registered
over HTTP on real gateways, events sent over real WebSockets, the notifications worker's
parts in this process with an injected clock, and a real local receiver. Signatures are
checked with the Standard Webhooks library itself; retries, disabling and replay are
driven by moving the clock."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import DEAD_LETTERS
from streams.subjects import dead_letter_subject
from tests.kits.notifykit import Clock, add_member, api, deliveries, notifier, notify_settings, say
from tests.kits.providers import HttpProviders, Recorded, SmtpServer, providers
from tests.kits.world import World, eventually
from workers.notifications import Dispatcher

DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[SmtpServer, HttpProviders]]:
    async with providers() as found:
        yield found


@contextlib.contextmanager
def failing(http: HttpProviders) -> Iterator[None]:
    """Webhook receivers answer 500 inside the block (the receiver is shared by the module)."""
    http.fail_webhooks = True
    try:
        yield
    finally:
        http.fail_webhooks = False


def hooks_path(world: World, *rest: str) -> str:
    return "/".join((f"/api/weddings/{world.wedding}/webhooks", *rest))


async def register(
    world: World, http: HttpProviders, events: list[str]
) -> tuple[dict[str, Any], str]:
    """A new endpoint of ``world`` at a fresh receiver path; (its JSON, that path)."""
    path = f"/hooks/{uuid.uuid4().hex[:12]}"
    r = await api(
        world,
        "POST",
        hooks_path(world),
        world.couple,
        json={"url": http.base + path, "events": events},
    )
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    return hook, path


def received(http: HttpProviders, path: str) -> list[Recorded]:
    return [r for r in http.webhooks if r.path == path]


async def hook_rows(conns: Connections, world: World, hook_id: str) -> list[dict[str, Any]]:
    return [
        r for r in await deliveries(conns, world.wedding) if r["webhook_id"] == uuid.UUID(hook_id)
    ]


async def only_row(conns: Connections, world: World, hook_id: str) -> dict[str, Any] | None:
    rows = await hook_rows(conns, world, hook_id)
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


async def listed(world: World, hook_id: str) -> dict[str, Any]:
    r = await api(world, "GET", hooks_path(world), world.couple)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = [h for h in r.json() if h["id"] == hook_id]
    assert len(found) == 1, r.json()
    return found[0]


async def delivery_log(world: World, delivery_id: int) -> dict[str, Any]:
    r = await api(
        world, "GET", f"/api/weddings/{world.wedding}/notifications/deliveries", world.couple
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = [d for d in r.json()["deliveries"] if d["id"] == delivery_id]
    assert len(found) == 1, r.json()
    return found[0]


def at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def fail_until_dead(
    conns: Connections,
    world: World,
    http: HttpProviders,
    d: Dispatcher,
    clock: Clock,
    hook_id: str,
    path: str,
    schedule: tuple[float, ...],
) -> dict[str, Any]:
    """Drive one failing delivery through every attempt of ``schedule``; its dead row.

    After attempt k fails (at the clock's time) the delivery is pending again, due
    ``schedule[k-1]`` seconds later, and nothing is sent until the clock gets there."""
    for attempt in range(1, len(schedule) + 1):
        row = await eventually(functools.partial(_failed_attempt, conns, world, hook_id, attempt))
        assert row["due_at"] == clock() + dt.timedelta(seconds=schedule[attempt - 1])
        assert row["reason"] is None
        assert len(received(http, path)) == attempt
        clock.advance(schedule[attempt - 1] - 1)
        await d.run_once()  # one whole dispatcher step a second early: not due yet
        still = await only_row(conns, world, hook_id)
        assert still is not None and (still["status"], still["attempts"]) == ("pending", attempt)
        assert len(received(http, path)) == attempt
        clock.advance(1)
    dead: dict[str, Any] = await eventually(lambda: _with_status(conns, world, hook_id, "dead"))
    assert dead["attempts"] == len(schedule) + 1
    assert len(received(http, path)) == len(schedule) + 1
    return dead


async def _failed_attempt(
    conns: Connections, world: World, hook_id: str, attempt: int
) -> dict[str, Any] | None:
    row = await only_row(conns, world, hook_id)
    if row and row["attempts"] == attempt and row["status"] == "pending":
        return row
    return None


async def _with_status(
    conns: Connections, world: World, hook_id: str, status: str
) -> dict[str, Any] | None:
    row = await only_row(conns, world, hook_id)
    return row if row and row["status"] == status else None


# -- registration and access -------------------------------------------------------------


async def test_register_list_remove_and_who_may(
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    _, http = servers
    hook, _ = await register(world, http, ["message", "entity.*"])
    assert hook["secret"].startswith("whsec_")
    assert hook["enabled"] is True and hook["disabled_reason"] is None
    assert hook["events"] == ["message", "entity.*"]
    Webhook(hook["secret"])  # a secret the Standard Webhooks library accepts

    shown = await listed(world, hook["id"])
    assert shown["url"] == hook["url"] and shown["events"] == hook["events"]
    assert shown.get("secret") is None, "the secret is shown once, at registration"
    r = await api(world, "GET", hooks_path(world), world.couple)
    assert hook["secret"] not in r.text

    planner = await add_member(world, "planner")
    r = await api(world, "GET", hooks_path(world), planner)
    assert r.status_code == 200 and [h["id"] for h in r.json()] == [hook["id"]]

    body = {"url": f"{http.base}/hooks/nope", "events": ["*"]}
    for role in ("family", "vendor", "guest"):
        member = await add_member(world, role)
        for method, path, kw in (
            ("POST", hooks_path(world), {"json": body}),
            ("GET", hooks_path(world), {}),
            ("POST", hooks_path(world, hook["id"], "replay"), {}),
            ("POST", hooks_path(world, hook["id"], "enable"), {}),
            ("DELETE", hooks_path(world, hook["id"]), {}),
        ):
            r = await api(world, method, path, member, **kw)
            assert r.status_code == 403, (role, method, path, r.text)
            assert r.json()["code"] == "forbidden"
    stranger = f"couple-{uuid.uuid4().hex[:8]}"
    for method, path, kw in (
        ("POST", hooks_path(world), {"json": body}),
        ("GET", hooks_path(world), {}),
    ):
        r = await api(world, method, path, stranger, **kw)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"

    for bad in (
        {"url": "ftp://example.org/hook", "events": ["*"]},
        {"url": "example.org/hook"},
        {"url": f"{http.base}/hooks/x", "events": []},
        {"url": f"{http.base}/hooks/x", "events": ["Message!"]},
        {"url": f"{http.base}/hooks/x", "events": ["*"], "secret": "mine"},
    ):
        r = await api(world, "POST", hooks_path(world), world.couple, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "invalid"

    r = await api(world, "POST", hooks_path(world, str(uuid.uuid4()), "replay"), world.couple)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await api(world, "DELETE", hooks_path(world, hook["id"]), world.couple)
    assert r.status_code == 204, r.text
    assert (await api(world, "GET", hooks_path(world), world.couple)).json() == []
    r = await api(world, "DELETE", hooks_path(world, hook["id"]), world.couple)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


# -- signed deliveries -------------------------------------------------------------------


async def test_deliveries_verify_with_standard_webhooks(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    hook, path = await register(world, http, ["message", "entity.*"])
    other, other_path = await register(world, http, ["entity.*"])
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        seq = await say(world, world.couple, "chat", {"text": "hi"})
        got = await eventually(lambda: received(http, path))
        row = await eventually(lambda: _with_status(conns, world, hook["id"], "sent"))
    assert len(got) == 1
    request = got[0]
    payload = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "message"
    data = payload["data"]
    assert data["wedding_id"] == world.wedding and data["seq"] == seq
    event = data["event"]
    assert event["type"] == "message" and event["channel"] == "chat"
    assert event["data"] == {"text": "hi"}
    assert event["actor"]["user_id"] == world.couple
    assert dt.datetime.fromisoformat(payload["timestamp"]).timestamp() == pytest.approx(
        event["ts"], abs=1e-3
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == row["key"] == f"{event['id']}:webhook:{hook['id']}"
    assert headers["content-type"] == "application/json"
    assert row["attempts"] == 1 and row["category"] == "webhook"

    tampered = request.body.replace(b'"hi"', b'"HI"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(request.body, request.headers)

    # the planner weighed both endpoints for this event in one transaction: the one whose
    # patterns do not match a chat message got nothing
    assert received(http, other_path) == []
    assert await hook_rows(conns, world, other["id"]) == []


# -- retries, disabling, the dead-letter stream -----------------------------------------


async def test_retry_schedule_then_dead_and_disabled(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    n = notify_settings(settings, smtp, http)
    assert n.webhook_schedule() == DEFAULT_SCHEDULE, "WEDSYNC_WEBHOOK_RETRY's default"
    hook, path = await register(world, http, ["message"])
    clock = Clock()
    start = clock()
    async with notifier(conns, settings, n, world.wedding, clock) as d:
        with failing(http):
            await say(world, world.couple, "chat", {"text": "hi"})
            dead = await fail_until_dead(
                conns, world, http, d, clock, hook["id"], path, DEFAULT_SCHEDULE
            )
        assert clock() - start == dt.timedelta(seconds=sum(DEFAULT_SCHEDULE))
        # every attempt carried the same idempotency key
        assert {r.headers["webhook-id"] for r in received(http, path)} == {dead["key"]}

        shown = await listed(world, hook["id"])
        assert shown["enabled"] is False
        assert "7 times" in shown["disabled_reason"], shown
        assert "HTTP 500" in shown["disabled_reason"], shown

        log = await delivery_log(world, dead["id"])
        assert log["status"] == "dead" and log["channel"] == "webhook"
        assert log["webhook_id"] == hook["id"] and log["user_id"] is None
        attempts = log["attempts"]
        assert [a["attempt"] for a in attempts] == list(range(1, 8))
        assert all(a["result"] == "failed" for a in attempts), attempts
        assert all("HTTP 500" in a["error"] for a in attempts), attempts
        gaps = [
            (at(b["at"]) - at(a["at"])).total_seconds() for a, b in itertools.pairwise(attempts)
        ]
        assert gaps == list(DEFAULT_SCHEDULE)

        letter = await eventually(lambda: _dead_letter(conns, dead["id"]))
        assert letter["key"] == dead["key"] and letter["channel"] == "webhook"
        assert letter["attempts"] == 7 and "HTTP 500" in letter["error"]

        # a disabled endpoint is not offered new events; an enabled one still is
        sentinel, sentinel_path = await register(world, http, ["message"])
        await say(world, world.couple, "chat", {"text": "anyone there?"})
        await eventually(lambda: _with_status(conns, world, sentinel["id"], "sent"))
    assert len(received(http, sentinel_path)) == 1
    assert [r["id"] for r in await hook_rows(conns, world, hook["id"])] == [dead["id"]]
    assert len(received(http, path)) == 7


async def _dead_letter(conns: Connections, delivery_id: int) -> dict[str, Any] | None:
    msg = await conns.js.get_last_msg(DEAD_LETTERS.name, dead_letter_subject("notifications"))
    assert msg.data is not None
    body: dict[str, Any] = json.loads(msg.data)
    return body if body["delivery_id"] == delivery_id else None


async def test_short_schedule_from_settings(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    n = notify_settings(settings, smtp, http, webhook_retry="5,300,1800")
    hook, path = await register(world, http, ["mess*"])
    clock = Clock()
    async with notifier(conns, settings, n, world.wedding, clock) as d:
        with failing(http):
            await say(world, world.couple, "chat", {"text": "hi"})
            dead = await fail_until_dead(
                conns, world, http, d, clock, hook["id"], path, (5.0, 300.0, 1800.0)
            )
    assert dead["attempts"] == 4
    shown = await listed(world, hook["id"])
    assert shown["enabled"] is False and "4 times" in shown["disabled_reason"]


# -- replay ------------------------------------------------------------------------------


async def test_replay_after_the_endpoint_is_fixed(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    smtp, http = servers
    n = notify_settings(settings, smtp, http, webhook_retry="5")
    hook, path = await register(world, http, ["message"])
    replay = hooks_path(world, hook["id"], "replay")
    clock = Clock()
    async with notifier(conns, settings, n, world.wedding, clock) as d:
        with failing(http):
            await say(world, world.couple, "chat", {"text": "hi"})
            dead = await fail_until_dead(conns, world, http, d, clock, hook["id"], path, (5.0,))

        r = await api(world, "POST", replay, world.couple)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "conflict"
        assert (await only_row(conns, world, hook["id"]) or {})["status"] == "dead"

        r = await api(world, "POST", hooks_path(world, hook["id"], "enable"), world.couple)
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
        assert (await listed(world, hook["id"]))["enabled"] is True

        # the receiver is fixed (``failing`` is over); a replay sends the dead one again.
        # It is due at the database's now(); the injected clock must not lag behind that
        clock.now = max(clock.now, dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=60)
        r = await api(world, "POST", replay, world.couple)
        assert r.status_code == 200, r.text
        assert r.json() == {"requeued": 1}
        sent = await eventually(lambda: _with_status(conns, world, hook["id"], "sent"))
        got = received(http, path)
        assert len(got) == 3
        again = got[-1]
        assert again.headers["webhook-id"] == dead["key"] == got[0].headers["webhook-id"]
        payload = Webhook(hook["secret"]).verify(again.body, again.headers)
        assert payload["data"]["event"]["data"] == {"text": "hi"}
        assert again.body == got[0].body

        r = await api(world, "POST", replay, world.couple)
        assert r.json() == {"requeued": 0}, "nothing failed is left"
    assert sent["id"] == dead["id"]
    log = await delivery_log(world, dead["id"])
    assert log["status"] == "sent" and log["sent_at"] is not None
    assert log["reason"] == "replayed"
    results = [a["result"] for a in log["attempts"]]
    assert results == ["failed", "failed", "sent"], (
        "the replayed attempt is missing from the delivery log",
        log["attempts"],
    )


# -- a webhook acts with its owner's authority (issue 22, finding 4) ---------------------


async def register_as(world: World, http: HttpProviders, user: str) -> tuple[dict[str, Any], str]:
    path = f"/hooks/{uuid.uuid4().hex[:12]}"
    r = await api(
        world,
        "POST",
        hooks_path(world),
        user,
        json={"url": http.base + path, "events": ["message"]},
    )
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    return hook, path


async def test_webhooks_stop_with_their_owner(
    settings: Settings,
    conns: Connections,
    world: World,
    servers: tuple[SmtpServer, HttpProviders],
) -> None:
    """A removed planner's webhook, and a demoted one's, stop receiving events (the
    couple's own keeps them); re-enabled by the couple it receives again, as theirs."""
    smtp, http = servers
    removed, demoted = await add_member(world, "planner"), await add_member(world, "planner")
    gone, gone_path = await register_as(world, http, removed)
    down, down_path = await register_as(world, http, demoted)
    _, kept_path = await register_as(world, http, world.couple)
    await world.remove(removed)
    r = await api(
        world,
        "PUT",
        f"/api/weddings/{world.wedding}/members/{demoted}",
        world.couple,
        json={"role": "family"},
    )
    assert r.status_code == 200, r.text
    assert (await listed(world, gone["id"]))["disabled_reason"] == "owner_removed"
    assert (await listed(world, down["id"]))["disabled_reason"] == "owner_lost_permission"
    assert not (await listed(world, down["id"]))["enabled"]
    n = notify_settings(settings, smtp, http)
    async with notifier(conns, settings, n, world.wedding, Clock()):
        await say(world, world.couple, "chat", {"text": "budget is 40k"})
        await eventually(lambda: received(http, kept_path))
        # one planner transaction weighed all three: the disabled ones got no delivery
        assert await hook_rows(conns, world, gone["id"]) == []
        assert await hook_rows(conns, world, down["id"]) == []
        assert received(http, gone_path) == [] and received(http, down_path) == []

        r = await api(world, "POST", hooks_path(world, gone["id"], "enable"), world.couple)
        assert r.status_code == 200 and r.json()["enabled"], r.text
        await say(world, world.couple, "chat", {"text": "and 45k with the band"})
        await eventually(lambda: received(http, gone_path))
    async with conns.pool.acquire() as conn:
        owner = await conn.fetchval(
            "SELECT created_by FROM webhooks WHERE id = $1", uuid.UUID(gone["id"])
        )
    assert owner == world.couple
