"""Sessions, JWTs, weddings and permissions through the real app and PostgreSQL."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from litestar.testing import AsyncTestClient

from app.auth import TokenVerifier, issue_token
from app.errors import Unauthorized
from app.factory import create_app
from config.settings import Settings
from runtime.connections import Connections
from streams.permissions import Role, WeddingStatus, permissions_for

pytestmark = pytest.mark.asyncio


def bearer(settings: Settings, user: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(settings.auth, user, **kw)}


async def new_wedding(c: AsyncTestClient[Any], settings: Settings, couple: str) -> str:
    r = await c.post(
        "/api/weddings",
        headers=bearer(settings, couple),
        json={"name": "A & B", "date": "2027-06-12", "timezone": "Europe/Paris"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "couple" and r.json()["status"] == "planning"
    wedding_id: str = r.json()["id"]
    return wedding_id


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_join_returns_the_matrix_for_every_role(settings: Settings) -> None:
    couple = uid("couple")
    async with AsyncTestClient(app=create_app(settings)) as c:
        w = await new_wedding(c, settings, couple)
        for role in Role:
            user = couple if role is Role.COUPLE else uid(role.value)
            if role is not Role.COUPLE:
                r = await c.put(
                    f"/api/weddings/{w}/members/{user}",
                    headers=bearer(settings, couple),
                    json={"role": role.value},
                )
                assert r.status_code == 200, r.text
            r = await c.post(f"/api/collaboration/join/{w}", headers=bearer(settings, user))
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["role"] == role.value
            expected = msgspec.to_builtins(permissions_for(role, WeddingStatus.PLANNING))
            assert body["permissions"] == expected
            assert body["last_seq"] == 0 and body["websocket_url"].endswith(f"/ws/weddings/{w}")
        assert body["permissions"]["budget"] == {"read": False, "write": False}  # guest


async def test_tokens_and_contacts_are_not_stored_in_plaintext(
    settings: Settings, conns: Connections
) -> None:
    couple, vendor = uid("couple"), uid("vendor")
    async with AsyncTestClient(app=create_app(settings)) as c:
        w = await new_wedding(c, settings, couple)
        r = await c.put(
            f"/api/weddings/{w}/members/{vendor}",
            headers=bearer(settings, couple),
            json={"role": "vendor", "email": "flowers@example.com", "phone": "+44 20 7946 0000"},
        )
        assert r.json()["email"] == "flowers@example.com"
        r = await c.post(
            f"/api/collaboration/join/{w}",
            headers=bearer(settings, vendor) | {"X-Device-Fingerprint": "fp-1"},
        )
        token = r.json()["session_token"]
        assert len(token) >= 22
    async with conns.pool.acquire() as db:
        member = await db.fetchrow(
            "SELECT * FROM wedding_members WHERE wedding_id = $1 AND user_id = $2",
            uuid.UUID(w),
            vendor,
        )
        session = await db.fetchrow("SELECT * FROM sessions WHERE user_id = $1", vendor)
    assert member is not None and session is not None
    for value in member.values():
        text = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert b"flowers@example.com" not in text and b"7946" not in text
    assert bytes(session["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert all(token not in str(v) for v in session.values())
    assert session["device_fingerprint"] == "fp-1" and session["user_agent"]


async def test_other_weddings_are_invisible(settings: Settings) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with AsyncTestClient(app=create_app(settings)) as c:
        await new_wedding(c, settings, alice)
        theirs = await new_wedding(c, settings, bob)
        ghost = str(uuid.uuid4())
        h = bearer(settings, alice)
        calls = [
            ("GET", "/api/weddings/{}", None),
            ("PATCH", "/api/weddings/{}", {"name": "x"}),
            ("GET", "/api/weddings/{}/members", None),
            ("PUT", "/api/weddings/{}/members/u1", {"role": "guest"}),
            ("DELETE", "/api/weddings/{}/members/u1", None),
            ("GET", "/api/weddings/{}/audit", None),
            ("GET", "/api/weddings/{}/events", None),
            ("POST", "/api/collaboration/join/{}", None),
            ("GET", "/api/collaboration/join/{}", None),
            ("DELETE", "/api/collaboration/join/{}", None),
        ]
        for method, path, body in calls:
            real = await c.request(method, path.format(theirs), headers=h, json=body)
            fake = await c.request(method, path.format(ghost), headers=h, json=body)
            assert real.status_code == fake.status_code == 404, (method, path)
            assert real.json() == fake.json() and real.json()["code"] == "not_found"


async def test_status_codes_of_the_session_api(settings: Settings) -> None:
    couple, guest = uid("couple"), uid("guest")
    async with AsyncTestClient(app=create_app(settings)) as c:
        assert (await c.post("/api/weddings", json={})).json()["code"] == "unauthorized"
        r = await c.post(
            "/api/weddings",
            headers=bearer(settings, couple),
            json={"name": "x", "date": "2027-01-01", "timezone": "Mars/Base"},
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid"
        w = await new_wedding(c, settings, couple)
        await c.put(
            f"/api/weddings/{w}/members/{guest}",
            headers=bearer(settings, couple),
            json={"role": "guest"},
        )
        r = await c.patch(f"/api/weddings/{w}", headers=bearer(settings, guest), json={"name": "y"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert (
            await c.get(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        ).status_code == 404
        await c.post(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        r = await c.get(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        assert r.status_code == 200 and len(r.json()["sessions"]) == 1
        assert (
            await c.delete(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        ).status_code == 204
        assert (
            await c.get(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        ).status_code == 404
        r = await c.patch(
            f"/api/weddings/{w}", headers=bearer(settings, couple), json={"status": "completed"}
        )
        assert r.status_code == 409
        for status in ("wedding_day", "completed"):
            r = await c.patch(
                f"/api/weddings/{w}", headers=bearer(settings, couple), json={"status": status}
            )
            assert r.status_code == 200, r.text
        r = await c.post(f"/api/collaboration/join/{w}", headers=bearer(settings, guest))
        assert r.status_code == 201 and r.json()["read_only"] is True
        assert not any(a["write"] for a in r.json()["permissions"].values())
        w2 = await new_wedding(c, settings, couple)
        await c.patch(
            f"/api/weddings/{w2}", headers=bearer(settings, couple), json={"status": "cancelled"}
        )
        r = await c.post(f"/api/collaboration/join/{w2}", headers=bearer(settings, couple))
        assert r.status_code == 409 and r.json()["code"] == "conflict"
        audit = await c.get(f"/api/weddings/{w}/audit", headers=bearer(settings, couple))
        actions = [e["action"] for e in audit.json()["items"]]
        assert {"permission_denied", "joined", "left", "member_added"} <= set(actions)


async def test_rate_limit_answers_429_with_retry_after(settings: Settings) -> None:
    # per hour: a burst straddling a window boundary gets a hit more (tests/test_rate_limits.py)
    limited = dataclasses.replace(
        settings, auth=dataclasses.replace(settings.auth, rate_user="3/hour")
    )
    user = uid("busy")
    async with AsyncTestClient(app=create_app(limited)) as c:
        codes = [
            (await c.get(f"/api/weddings/{uuid.uuid4()}", headers=bearer(settings, user)))
            for _ in range(4)
        ]
    assert [r.status_code for r in codes] == [404, 404, 404, 429]
    assert codes[-1].json()["code"] == "rate_limited" and int(codes[-1].headers["retry-after"]) > 0


async def test_jwt_verification_refuses_what_it_must(settings: Settings, tmp_path: Any) -> None:
    auth = dataclasses.replace(settings.auth, jwt_issuer="wedsync", jwt_audience="app")
    v = TokenVerifier(auth)
    now = int(time.time())
    good = {"sub": "u1", "exp": now + 60, "iss": "wedsync", "aud": "app"}
    secret = auth.jwt_secret
    assert secret is not None  # the session's settings carry one (tests/conftest.py)
    assert (await v.verify(jwt.encode(good, secret, algorithm="HS256"))).user_id == "u1"
    bad = [
        jwt.encode(good, "another-secret-of-enough-length!!", algorithm="HS256"),  # forged
        jwt.encode(good | {"exp": now - 60}, secret, algorithm="HS256"),  # expired
        jwt.encode(good | {"aud": "other"}, secret, algorithm="HS256"),
        jwt.encode(good | {"iss": "evil"}, secret, algorithm="HS256"),
        jwt.encode({k: v for k, v in good.items() if k != "exp"}, secret, algorithm="HS256"),
        jwt.encode(good, "", algorithm="none"),  # PyJWT's spelling of "no key"
        "not.a.jwt",
    ]
    for token in bad:
        with pytest.raises(Unauthorized):
            await v.verify(token)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    ec_auth = dataclasses.replace(auth, jwt_secret=None, jwt_public_key=str(tmp_path / "pub.pem"))
    ev = TokenVerifier(ec_auth)
    assert (await ev.verify(jwt.encode(good, key, algorithm="ES256"))).user_id == "u1"

    # Algorithm confusion: an HS256 token whose HMAC key is the public key (built by hand:
    # PyJWT refuses to sign it).
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(good).encode())
    forged = signing + b"." + b64(hmac.new(pem, signing, hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        await ev.verify(forged.decode())
