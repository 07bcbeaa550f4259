"""The session API (/api/collaboration/join/{id}) end to end: app, PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.auth.tokens import TokenVerifier, issue_token
from app.factory import create_app
from config.settings import AuthSettings, Settings
from runtime.connections import Connections
from streams.permissions import Role, WeddingStatus, permissions_for

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[1]
CLIENT_IP = "127.0.0.1"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22,}$")  # url-safe base64 of >= 128 bits


def with_client_ip(app: Litestar, host: str = CLIENT_IP) -> Litestar:
    """Give requests a real client address (the test transport says ``"testclient"``)."""
    inner = app.asgi_handler

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        scope["client"] = (host, 50000)
        await inner(scope, receive, send)

    app.asgi_handler = handler
    return app


@contextlib.asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=with_client_ip(create_app(settings))) as client:
        yield client


def user() -> str:
    return "u-" + uuid.uuid4().hex


def bearer(settings: Settings, user_id: str, name: str | None = None) -> dict[str, str]:
    token = issue_token(settings.auth, user_id, name=name, email=f"{user_id}@example.com")
    return {"Authorization": f"Bearer {token}"}


def device(fingerprint: str, agent: str = "WedSyncTest/1.0") -> dict[str, str]:
    return {"X-Device-Fingerprint": fingerprint, "User-Agent": agent}


def expected_permissions(role: Role, status: WeddingStatus) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(permissions_for(role, status))
    return out


def join_path(wedding_id: str) -> str:
    return f"/api/collaboration/join/{wedding_id}"


async def new_wedding(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> str:
    r = await client.post(
        "/api/weddings",
        json={"name": "Ada & Bea", "date": "2031-06-21", "timezone": "Europe/London"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "couple"
    assert r.json()["status"] == "planning"
    wedding_id: str = r.json()["id"]
    return wedding_id


async def add_member(
    client: AsyncTestClient[Litestar],
    couple: dict[str, str],
    wedding_id: str,
    user_id: str,
    role: Role,
) -> None:
    r = await client.put(
        f"/api/weddings/{wedding_id}/members/{user_id}",
        json={"role": role.value, "display_name": f"{role.value} {user_id[-4:]}"},
        headers=couple,
    )
    assert r.status_code in (200, 201), r.text
    assert r.json()["role"] == role.value


async def set_status(
    client: AsyncTestClient[Litestar], couple: dict[str, str], wedding_id: str, status: str
) -> None:
    r = await client.patch(f"/api/weddings/{wedding_id}", json={"status": status}, headers=couple)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == status


async def session_rows(conns: Connections, wedding_id: str, user_id: str) -> list[Any]:
    return await conns.pool.fetch(
        "SELECT * FROM sessions WHERE wedding_id = $1 AND user_id = $2 ORDER BY created_at",
        uuid.UUID(wedding_id),
        user_id,
    )


# --- joining ----------------------------------------------------------------------------


async def test_couple_creates_a_wedding_and_joins(settings: Settings) -> None:
    couple_id = user()
    couple = bearer(settings, couple_id, name="Ada")
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        before = dt.datetime.now(dt.UTC)
        r = await client.post(join_path(wedding_id), headers=couple | device("fp-laptop"))
        assert r.status_code == 201, r.text
        body = r.json()

    assert uuid.UUID(body["session_id"])
    token = body["session_token"]
    assert TOKEN_RE.match(token), token
    assert token not in json.dumps({k: v for k, v in body.items() if k != "session_token"})
    expires = dt.datetime.fromisoformat(body["expires_at"])
    ttl = dt.timedelta(seconds=settings.auth.session_ttl)
    assert before + ttl - dt.timedelta(minutes=1) < expires < before + ttl + dt.timedelta(minutes=1)
    assert body["websocket_url"].startswith(("ws://", "wss://"))
    assert body["websocket_url"].endswith(f"/ws/weddings/{wedding_id}")
    assert body["role"] == "couple"
    assert body["permissions"] == expected_permissions(Role.COUPLE, WeddingStatus.PLANNING)
    assert isinstance(body["last_seq"], int) and not isinstance(body["last_seq"], bool)
    assert body["last_seq"] == 0
    assert body["read_only"] is False
    assert {"user_id": couple_id, "role": "couple", "display_name": "Ada"} in body["collaborators"]


async def test_every_join_gets_a_new_distinct_token(settings: Settings) -> None:
    couple = bearer(settings, user())
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        joins = [
            (await client.post(join_path(wedding_id), headers=couple | device(f"fp-{i}"))).json()
            for i in range(3)
        ]
    assert len({j["session_id"] for j in joins}) == 3
    assert len({j["session_token"] for j in joins}) == 3


async def test_sessions_table_holds_no_plaintext_token(
    settings: Settings, conns: Connections
) -> None:
    couple_id = user()
    couple = bearer(settings, couple_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        r = await client.post(
            join_path(wedding_id), headers=couple | device("fp-phone-42", "Mozilla/5.0 (Test)")
        )
        assert r.status_code == 201, r.text
    token, session_id = r.json()["session_token"], uuid.UUID(r.json()["session_id"])

    row = await conns.pool.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
    assert row is not None
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    for column, value in row.items():
        if isinstance(value, bytes | bytearray | memoryview):
            assert token.encode() not in bytes(value), column
            assert bytes(value) != token.encode(), column
        else:
            assert token not in str(value), column
    assert row["device_fingerprint"] == "fp-phone-42"
    assert str(row["ip"]) == CLIENT_IP
    assert row["user_agent"] == "Mozilla/5.0 (Test)"
    assert row["user_id"] == couple_id
    assert row["ended_at"] is None and row["end_reason"] is None

    # nor anywhere else in the database that the join wrote to
    audit = await conns.pool.fetch(
        "SELECT details::text AS d FROM audit_log WHERE wedding_id = $1", uuid.UUID(wedding_id)
    )
    assert audit and all(token not in a["d"] for a in audit)
    assert any(str(session_id) in a["d"] for a in audit)  # the join is audited by session id


async def test_a_client_host_that_is_not_an_ip_is_recorded_as_null(
    settings: Settings, conns: Connections
) -> None:
    """Litestar's test transport says client ``"testclient"``: not an inet, stored as NULL."""
    couple = bearer(settings, user())
    async with AsyncTestClient(app=create_app(settings)) as client:
        wedding_id = await new_wedding(client, couple)
        r = await client.post(join_path(wedding_id), headers=couple | device("fp"))
        assert r.status_code == 201, r.text
        listed = await client.get(join_path(wedding_id), headers=couple)
        assert listed.status_code == 200, listed.text
    assert [s["ip"] for s in listed.json()["sessions"]] == [None]
    row = await conns.pool.fetchrow(
        "SELECT ip FROM sessions WHERE id = $1", uuid.UUID(r.json()["session_id"])
    )
    assert row is not None and row["ip"] is None


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_every_role_gets_the_permission_matrix(
    settings: Settings, conns: Connections, role: Role
) -> None:
    couple_id, member_id = user(), user()
    couple = bearer(settings, couple_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        if role is Role.COUPLE:
            await add_member(client, couple, wedding_id, member_id, Role.COUPLE)
        else:
            await add_member(client, couple, wedding_id, member_id, role)
        member = bearer(settings, member_id)
        r = await client.post(join_path(wedding_id), headers=member | device(f"fp-{role}"))
        assert r.status_code == 201, r.text
        body = r.json()
        listed = await client.get(join_path(wedding_id), headers=member)
        assert listed.status_code == 200, listed.text

    assert body["role"] == role.value
    assert body["read_only"] is False
    assert body["permissions"] == expected_permissions(role, WeddingStatus.PLANNING)
    assert listed.json()["permissions"] == body["permissions"]
    assert listed.json()["role"] == role.value
    assert set(body["permissions"]) == {
        "timeline",
        "budget",
        "vendors",
        "guests",
        "tasks",
        "chat",
        "emergency",
    }
    assert any(c["user_id"] == member_id for c in body["collaborators"])
    perms = body["permissions"]
    if role is Role.GUEST:
        assert perms["budget"] == {"read": False, "write": False}
        assert perms["vendors"]["read"] is False
        assert perms["chat"] == {"read": True, "write": True}
    if role is Role.VENDOR:
        assert perms["timeline"] == {"read": True, "write": False}
        assert perms["vendors"] == {"read": True, "write": True}
        assert perms["budget"]["read"] is False
    if role in (Role.COUPLE, Role.PLANNER):
        assert all(p == {"read": True, "write": True} for p in perms.values())
    if role is Role.FAMILY:
        assert perms["budget"]["read"] is False
        assert perms["guests"] == {"read": True, "write": True}


async def test_collaborators_are_members_with_a_live_session(settings: Settings) -> None:
    couple_id, planner_id, guest_id = user(), user(), user()
    couple = bearer(settings, couple_id, name="Ada")
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        await add_member(client, couple, wedding_id, planner_id, Role.PLANNER)
        await add_member(client, couple, wedding_id, guest_id, Role.GUEST)  # never joins
        assert (await client.post(join_path(wedding_id), headers=couple)).status_code == 201
        r = await client.post(join_path(wedding_id), headers=bearer(settings, planner_id))
        assert r.status_code == 201
    ids = [c["user_id"] for c in r.json()["collaborators"]]
    assert sorted(ids) == sorted([couple_id, planner_id])
    assert guest_id not in ids


# --- inspecting and leaving ------------------------------------------------------------


async def test_list_leave_and_never_joined(settings: Settings, conns: Connections) -> None:
    couple_id, family_id = user(), user()
    couple = bearer(settings, couple_id)
    family = bearer(settings, family_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        await add_member(client, couple, wedding_id, family_id, Role.FAMILY)
        first = (await client.post(join_path(wedding_id), headers=couple | device("fp-a"))).json()
        second = (
            await client.post(join_path(wedding_id), headers=couple | device("fp-b", "UA-b"))
        ).json()

        r = await client.get(join_path(wedding_id), headers=couple)
        assert r.status_code == 200, r.text
        listed = r.json()
        assert listed["wedding_id"] == wedding_id
        assert listed["role"] == "couple"
        sessions = listed["sessions"]
        assert isinstance(sessions, list)
        assert [s["session_id"] for s in sessions] == [first["session_id"], second["session_id"]]
        assert [s["device_fingerprint"] for s in sessions] == ["fp-a", "fp-b"]
        assert sessions[1]["user_agent"] == "UA-b"
        assert all(s["ip"] == CLIENT_IP for s in sessions)
        assert all("session_token" not in s and "token_hash" not in s for s in sessions)
        assert first["session_token"] not in r.text

        # a member who never joined has no session to show
        r = await client.get(join_path(wedding_id), headers=family)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"

        r = await client.delete(join_path(wedding_id), headers=couple)
        assert r.status_code == 204
        r = await client.get(join_path(wedding_id), headers=couple)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"

    rows = await session_rows(conns, wedding_id, couple_id)
    assert len(rows) == 2
    assert all(row["ended_at"] is not None and row["end_reason"] == "left" for row in rows)


async def test_listing_shows_only_the_callers_sessions(settings: Settings) -> None:
    couple_id, planner_id = user(), user()
    couple = bearer(settings, couple_id)
    planner = bearer(settings, planner_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        await add_member(client, couple, wedding_id, planner_id, Role.PLANNER)
        mine = (await client.post(join_path(wedding_id), headers=couple | device("c"))).json()
        await client.post(join_path(wedding_id), headers=planner | device("p"))
        r = await client.get(join_path(wedding_id), headers=couple)
        assert [s["session_id"] for s in r.json()["sessions"]] == [mine["session_id"]]
        # the planner leaving does not end the couple's session
        assert (await client.delete(join_path(wedding_id), headers=planner)).status_code == 204
        r = await client.get(join_path(wedding_id), headers=couple)
        assert [s["session_id"] for s in r.json()["sessions"]] == [mine["session_id"]]


# --- wedding status ---------------------------------------------------------------------


async def test_cancelled_wedding_cannot_be_joined(settings: Settings, conns: Connections) -> None:
    couple_id = user()
    couple = bearer(settings, couple_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        await set_status(client, couple, wedding_id, "cancelled")
        r = await client.post(join_path(wedding_id), headers=couple | device("fp"))
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "conflict"
    assert await session_rows(conns, wedding_id, couple_id) == []


@pytest.mark.parametrize("role", [Role.COUPLE, Role.VENDOR, Role.GUEST], ids=str)
async def test_completed_wedding_joins_read_only(settings: Settings, role: Role) -> None:
    couple_id, member_id = user(), user()
    couple = bearer(settings, couple_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        who = couple
        if role is not Role.COUPLE:
            await add_member(client, couple, wedding_id, member_id, role)
            who = bearer(settings, member_id)
        await set_status(client, couple, wedding_id, "wedding_day")
        await set_status(client, couple, wedding_id, "completed")
        r = await client.post(join_path(wedding_id), headers=who | device("fp"))
        assert r.status_code == 201, r.text
        body = r.json()
        listed = (await client.get(join_path(wedding_id), headers=who)).json()
    assert body["read_only"] is True
    assert body["role"] == role.value
    assert body["permissions"] == expected_permissions(role, WeddingStatus.COMPLETED)
    assert all(p["write"] is False for p in body["permissions"].values())
    # what was readable stays readable
    planning = expected_permissions(role, WeddingStatus.PLANNING)
    assert {c: p["read"] for c, p in body["permissions"].items()} == {
        c: p["read"] for c, p in planning.items()
    }
    assert listed["permissions"] == body["permissions"]


# --- session cap ------------------------------------------------------------------------


async def test_session_cap_ends_the_oldest(settings: Settings, conns: Connections) -> None:
    capped = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, max_sessions=2))
    couple_id = user()
    couple = bearer(settings, couple_id)
    async with api(capped) as client:
        wedding_id = await new_wedding(client, couple)
        ids = []
        for i in range(3):
            r = await client.post(join_path(wedding_id), headers=couple | device(f"fp-{i}"))
            assert r.status_code == 201, r.text
            ids.append(r.json()["session_id"])
        r = await client.get(join_path(wedding_id), headers=couple)
        assert r.status_code == 200
        sessions = r.json()["sessions"]
    assert [s["session_id"] for s in sessions] == ids[1:]
    assert [s["device_fingerprint"] for s in sessions] == ["fp-1", "fp-2"]

    rows = {str(row["id"]): row for row in await session_rows(conns, wedding_id, couple_id)}
    assert len(rows) == 3
    oldest = rows[ids[0]]
    assert oldest["ended_at"] is not None
    assert oldest["end_reason"] == "session_cap"
    assert all(rows[i]["ended_at"] is None for i in ids[1:])


# --- who may join -----------------------------------------------------------------------


async def test_non_member_and_unknown_wedding_look_the_same(settings: Settings) -> None:
    couple = bearer(settings, user())
    stranger = bearer(settings, user())
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        r1 = await client.post(join_path(wedding_id), headers=stranger | device("fp"))
        r2 = await client.post(join_path(str(uuid.uuid4())), headers=stranger | device("fp"))
        assert r1.status_code == r2.status_code == 404
        assert r1.json() == r2.json()
        assert r1.json()["code"] == "not_found"
        for method in ("get", "delete"):
            g1 = await getattr(client, method)(join_path(wedding_id), headers=stranger)
            g2 = await getattr(client, method)(join_path(str(uuid.uuid4())), headers=stranger)
            assert g1.status_code == g2.status_code == 404, method
            assert g1.json() == g2.json()


async def test_join_needs_a_valid_token(settings: Settings) -> None:
    couple = bearer(settings, user())
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        for headers in (
            {},
            {"Authorization": "Basic x"},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": "Bearer " + issue_token(settings.auth, user(), ttl=-60)},
        ):
            for method in ("post", "get", "delete"):
                r = await getattr(client, method)(join_path(wedding_id), headers=headers)
                assert r.status_code == 401, (method, headers, r.text)
                assert r.json()["code"] == "unauthorized"
        r = await client.post("/api/collaboration/join/not-a-uuid", headers=couple)
        assert r.status_code in (400, 404, 422)


# --- membership changes -----------------------------------------------------------------


async def test_removing_a_member_ends_their_sessions(
    settings: Settings, conns: Connections
) -> None:
    couple_id, vendor_id = user(), user()
    couple = bearer(settings, couple_id)
    vendor = bearer(settings, vendor_id)
    async with api(settings) as client:
        wedding_id = await new_wedding(client, couple)
        await add_member(client, couple, wedding_id, vendor_id, Role.VENDOR)
        for fp in ("fp-1", "fp-2"):
            r = await client.post(join_path(wedding_id), headers=vendor | device(fp))
            assert r.status_code == 201, r.text
        assert (await client.post(join_path(wedding_id), headers=couple)).status_code == 201

        r = await client.delete(f"/api/weddings/{wedding_id}/members/{vendor_id}", headers=couple)
        assert r.status_code == 204, r.text
        # gone: no longer a member, so neither their sessions nor the wedding exist for them
        r = await client.get(join_path(wedding_id), headers=vendor)
        assert r.status_code == 404
        r = await client.post(join_path(wedding_id), headers=vendor)
        assert r.status_code == 404
        # the couple's session is untouched
        r = await client.get(join_path(wedding_id), headers=couple)
        assert r.status_code == 200 and len(r.json()["sessions"]) == 1

    rows = await session_rows(conns, wedding_id, vendor_id)
    assert len(rows) == 2
    assert all(row["ended_at"] is not None for row in rows)
    assert {row["end_reason"] for row in rows} == {"member_removed"}
    couple_rows = await session_rows(conns, wedding_id, couple_id)
    assert [row["ended_at"] for row in couple_rows] == [None]


# --- `wedsync token` --------------------------------------------------------------------


async def run_token_cli(data_dir: Path, secret: str | None, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    env["WEDSYNC_DATA_DIR"] = str(data_dir)
    if secret is not None:
        env["WEDSYNC_JWT_SECRET"] = secret
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        "token",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().split()
    assert len(lines) == 1, out  # the token alone on stdout; logs go to stderr
    return lines[0]


async def test_token_cli_signs_with_the_configured_secret(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.auth.jwt_secret
    user_id = user()
    token = await run_token_cli(
        tmp_path / "data", settings.auth.jwt_secret, "--user", user_id, "--name", "N", "--ttl", "60"
    )
    identity = await TokenVerifier(settings.auth).verify(token)
    assert identity.user_id == user_id
    assert identity.name == "N"
    # and the app accepts it
    async with api(settings) as client:
        r = await client.get(
            f"/api/weddings/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 404  # authenticated; simply not a member


async def test_token_cli_dev_secret_survives_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_user, second_user = user(), user()
    # the first creates the data dir's secrets (refused without --new-secret: test_dev_cli.py)
    first = await run_token_cli(data_dir, None, "--user", first_user, "--ttl", "60", "--new-secret")
    stored = json.loads((data_dir / "secrets.json").read_text())
    second = await run_token_cli(data_dir, None, "--user", second_user, "--name", "N")
    assert json.loads((data_dir / "secrets.json").read_text()) == stored
    assert (data_dir / "secrets.json").stat().st_mode & 0o077 == 0  # owner only

    verifier = TokenVerifier(AuthSettings(jwt_secret=stored["jwt_secret"]))
    assert (await verifier.verify(first)).user_id == first_user
    assert (await verifier.verify(second)).user_id == second_user
