"""User JWT verification: HS256, RS256/ES256 PEM keys, JWKS with rotation, and refusals."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import threading
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import jwt.jwks_client
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from litestar.testing import AsyncTestClient

from app.auth.tokens import Identity, TokenVerifier, issue_token
from app.errors import Unauthorized
from app.factory import create_app
from config.settings import AuthSettings, Settings

pytestmark = pytest.mark.asyncio

SECRET = "test-secret-" + "x" * 40
ISSUER = "https://id.wedsync.test/"
AUDIENCE = "wedsync-realtime"


def claims(user: str | None = None, ttl: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "sub": uuid.uuid4().hex if user is None else user,
        "iat": now,
        "exp": now + ttl,
    }
    out.update(extra)
    return out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], signer: bytes | None) -> str:
    """A JWT built without PyJWT (which refuses to sign some of the tokens we need)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if signer is None:
        return signing_input + "."
    mac = hmac.new(signer, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


async def refused(verifier: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        await verifier.verify(token)
    assert info.value.status == 401
    assert info.value.code == "unauthorized"
    return info.value


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class KeyPair:
    private: PrivateKey
    public_pem: str

    def pem_file(self, directory: Path) -> Path:
        path = directory / f"key-{uuid.uuid4().hex[:8]}.pem"
        path.write_text(self.public_pem)
        return path


def _public_pem(private: PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _rsa() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(key, _public_pem(key))


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    return _rsa()


@pytest.fixture(scope="module")
def other_rsa_key() -> KeyPair:
    return _rsa()


@pytest.fixture(scope="module")
def ec_key() -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(key, _public_pem(key))


# --- HS256 -----------------------------------------------------------------------------------


async def test_hs256_valid_token_gives_identity() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    user = uuid.uuid4().hex
    token = jwt.encode(
        claims(user, name="Ada Lovelace", email="ada@example.com"), SECRET, algorithm="HS256"
    )
    identity = await verifier.verify(token)
    assert identity == Identity(user_id=user, name="Ada Lovelace", email="ada@example.com")


async def test_issue_token_round_trips_through_the_verifier() -> None:
    auth = AuthSettings(jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    user = uuid.uuid4().hex
    token = issue_token(auth, user, name="Bea", email="bea@example.com", ttl=60)
    assert await TokenVerifier(auth).verify(token) == Identity(user, "Bea", "bea@example.com")
    decoded = jwt.decode(token, options={"verify_signature": False})
    assert decoded["iss"] == ISSUER
    assert decoded["aud"] == AUDIENCE
    assert decoded["exp"] - decoded["iat"] == 60


async def test_optional_claims_may_be_absent() -> None:
    user = uuid.uuid4().hex
    token = jwt.encode(claims(user), SECRET, algorithm="HS256")
    assert await TokenVerifier(AuthSettings(jwt_secret=SECRET)).verify(token) == Identity(user)


async def test_forged_signature_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    forged = jwt.encode(claims(), "some-other-secret-" + "y" * 32, algorithm="HS256")
    err = await refused(verifier, forged)
    assert "signature" in err.message.lower()
    # and says what to check (a dev token from another data dir is the usual cause)
    assert "not signed with this server's key" in err.message
    assert "WEDSYNC_JWT_SECRET" in err.message


async def test_tampered_payload_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    header, _, signature = jwt.encode(claims("alice"), SECRET, algorithm="HS256").split(".")
    payload = b64url(json.dumps(claims("mallory")).encode())
    await refused(verifier, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "e30.e30.", "....."])
async def test_garbage_is_refused(garbage: str) -> None:
    await refused(TokenVerifier(AuthSettings(jwt_secret=SECRET)), garbage)


async def test_expired_token_is_refused_as_expired() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    now = int(time.time())
    token = jwt.encode(
        {"sub": uuid.uuid4().hex, "iat": now - 3600, "exp": now - 60}, SECRET, algorithm="HS256"
    )
    err = await refused(verifier, token)
    assert "expired" in err.message


async def test_token_without_exp_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    token = jwt.encode({"sub": uuid.uuid4().hex, "iat": int(time.time())}, SECRET, "HS256")
    err = await refused(verifier, token)
    assert "exp" in err.message


async def test_token_without_sub_or_with_a_bad_sub_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    no_sub = claims()
    del no_sub["sub"]
    await refused(verifier, jwt.encode(no_sub, SECRET, algorithm="HS256"))
    await refused(verifier, jwt.encode(claims("u" * 129), SECRET, algorithm="HS256"))
    await refused(verifier, jwt.encode(claims() | {"sub": ""}, SECRET, algorithm="HS256"))
    assert (await verifier.verify(jwt.encode(claims("u" * 128), SECRET, "HS256"))).user_id


async def test_issuer_and_audience_are_enforced_when_configured() -> None:
    verifier = TokenVerifier(
        AuthSettings(jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    )
    user = uuid.uuid4().hex

    def sign(**extra: Any) -> str:
        return jwt.encode(claims(user, **extra), SECRET, algorithm="HS256")

    assert (await verifier.verify(sign(iss=ISSUER, aud=AUDIENCE))).user_id == user
    assert (await verifier.verify(sign(iss=ISSUER, aud=[AUDIENCE, "other"]))).user_id == user
    await refused(verifier, sign(iss=ISSUER, aud="someone-else"))
    await refused(verifier, sign(iss="https://evil.example/", aud=AUDIENCE))
    await refused(verifier, sign(aud=AUDIENCE))  # no iss
    await refused(verifier, sign(iss=ISSUER))  # no aud


async def test_audience_is_not_required_when_not_configured() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    token = jwt.encode(claims(aud="anything", iss="anyone"), SECRET, algorithm="HS256")
    assert (await verifier.verify(token)).user_id


async def test_alg_none_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    body = claims()
    unsigned = jwt.encode(body, "", algorithm="none")  # PyJWT's spelling of "no key"
    await refused(verifier, unsigned)
    for alg in ("none", "None", "NONE", ""):
        await refused(verifier, hand_made({"alg": alg, "typ": "JWT"}, body, None))
    # `none` header with an HMAC signature made with the real secret: still refused
    await refused(verifier, hand_made({"alg": "none", "typ": "JWT"}, body, SECRET.encode()))
    await refused(verifier, hand_made({"typ": "JWT"}, body, SECRET.encode()))  # no alg


async def test_other_hmac_algorithms_are_refused() -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    for alg in ("HS384", "HS512"):
        await refused(verifier, jwt.encode(claims(), SECRET, algorithm=alg))


async def test_a_verifier_needs_a_key() -> None:
    with pytest.raises(ValueError, match="no JWT key"):
        TokenVerifier(AuthSettings())


# --- RS256 / ES256 with a PEM public key ----------------------------------------------------


@pytest.mark.parametrize("as_path", [False, True], ids=["pem-text", "pem-path"])
async def test_rs256_with_public_key(
    rsa_key: KeyPair, other_rsa_key: KeyPair, tmp_path: Path, as_path: bool
) -> None:
    configured = str(rsa_key.pem_file(tmp_path)) if as_path else rsa_key.public_pem
    verifier = TokenVerifier(AuthSettings(jwt_public_key=configured))
    user = uuid.uuid4().hex
    token = jwt.encode(claims(user, name="Cleo"), rsa_key.private, algorithm="RS256")
    assert await verifier.verify(token) == Identity(user, "Cleo")
    # signed by another RSA key
    await refused(verifier, jwt.encode(claims(), other_rsa_key.private, algorithm="RS256"))
    # HS256 is not accepted at all when only a public key is configured
    await refused(verifier, jwt.encode(claims(), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("as_path", [False, True], ids=["pem-text", "pem-path"])
async def test_es256_with_public_key(
    ec_key: KeyPair, rsa_key: KeyPair, tmp_path: Path, as_path: bool
) -> None:
    configured = str(ec_key.pem_file(tmp_path)) if as_path else ec_key.public_pem
    verifier = TokenVerifier(AuthSettings(jwt_public_key=configured))
    user = uuid.uuid4().hex
    token = jwt.encode(claims(user, email="d@example.com"), ec_key.private, algorithm="ES256")
    assert await verifier.verify(token) == Identity(user, email="d@example.com")
    other = ec.generate_private_key(ec.SECP256R1())
    await refused(verifier, jwt.encode(claims(), other, algorithm="ES256"))
    # an RS256 token against the EC key
    await refused(verifier, jwt.encode(claims(), rsa_key.private, algorithm="RS256"))


async def test_asymmetric_tokens_refused_when_only_a_secret_is_configured(
    rsa_key: KeyPair, ec_key: KeyPair
) -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET))
    await refused(verifier, jwt.encode(claims(), rsa_key.private, algorithm="RS256"))
    await refused(verifier, jwt.encode(claims(), ec_key.private, algorithm="ES256"))


async def test_algorithm_confusion_public_key_as_hmac_secret_is_refused(
    rsa_key: KeyPair, ec_key: KeyPair
) -> None:
    body = claims()
    header = {"alg": "HS256", "typ": "JWT"}
    for pair in (rsa_key, ec_key):
        confused = hand_made(header, body, pair.public_pem.encode())
        # sanity: this really is a valid HS256 token for "secret = the public key PEM"
        assert hmac.compare_digest(
            confused.rsplit(".", 1)[1],
            b64url(
                hmac.new(
                    pair.public_pem.encode(),
                    confused.rsplit(".", 1)[0].encode(),
                    hashlib.sha256,
                ).digest()
            ),
        )
        only_public = TokenVerifier(AuthSettings(jwt_public_key=pair.public_pem))
        err = await refused(only_public, confused)
        assert "HS256" in err.message
        both = TokenVerifier(AuthSettings(jwt_secret=SECRET, jwt_public_key=pair.public_pem))
        await refused(both, confused)


async def test_secret_and_public_key_together_accept_both_kinds(rsa_key: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET, jwt_public_key=rsa_key.public_pem))
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await verifier.verify(jwt.encode(claims(a), SECRET, "HS256"))).user_id == a
    assert (await verifier.verify(jwt.encode(claims(b), rsa_key.private, "RS256"))).user_id == b


# --- JWKS ----------------------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    state = JwksServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def jwk(pair: KeyPair, kid: str, alg: str) -> dict[str, Any]:
    public = pair.private.public_key()
    out = (
        RSAAlgorithm.to_jwk(public, as_dict=True)
        if isinstance(public, rsa.RSAPublicKey)
        else ECAlgorithm.to_jwk(public, as_dict=True)
    )
    return out | {"kid": kid, "alg": alg, "use": "sig"}


def signed(pair: KeyPair, kid: str, alg: str = "RS256", user: str | None = None) -> str:
    return jwt.encode(claims(user), pair.private, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def jwks_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Move PyJWKClient's clock (only its module's) forward, past its refresh cooldown.

    Recent PyJWT versions refuse to refetch a JWK set for an unknown kid within
    ``cooldown_duration`` (30 s) of the last fetch; tests must not sleep that long.
    """
    offset = {"s": 0.0}
    shim = types.SimpleNamespace(monotonic=lambda: time.monotonic() + offset["s"])
    if hasattr(jwt.jwks_client, "time"):
        monkeypatch.setattr(jwt.jwks_client, "time", shim)

    def advance(seconds: float) -> None:
        offset["s"] += seconds

    return advance


async def test_jwks_verifies_by_kid(
    jwks: JwksServer, rsa_key: KeyPair, ec_key: KeyPair, other_rsa_key: KeyPair
) -> None:
    jwks.keys = [jwk(rsa_key, "k1", "RS256"), jwk(ec_key, "e1", "ES256")]
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks.url))
    user = uuid.uuid4().hex
    assert (await verifier.verify(signed(rsa_key, "k1", user=user))).user_id == user
    assert (await verifier.verify(signed(ec_key, "e1", "ES256", user=user))).user_id == user
    assert jwks.hits >= 1
    # a kid the set does not have, a known kid with the wrong key, no kid at all
    await refused(verifier, signed(other_rsa_key, "nope"))
    await refused(verifier, signed(other_rsa_key, "k1"))
    await refused(verifier, jwt.encode(claims(), rsa_key.private, algorithm="RS256"))
    # HS256 signed with the JWK's PEM: no secret configured, so refused
    await refused(verifier, hand_made({"alg": "HS256", "kid": "k1"}, claims(), b"k1"))
    await refused(
        verifier,
        hand_made({"alg": "HS256", "kid": "k1"}, claims(), rsa_key.public_pem.encode()),
    )


async def test_jwks_rotation_to_a_new_kid(
    jwks: JwksServer, rsa_key: KeyPair, other_rsa_key: KeyPair, jwks_clock: Any
) -> None:
    jwks.keys = [jwk(rsa_key, "k1", "RS256")]
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks.url))
    assert (await verifier.verify(signed(rsa_key, "k1"))).user_id
    hits = jwks.hits

    jwks.keys = [jwk(other_rsa_key, "k2", "RS256")]  # rotate: the server now serves k2 only
    jwks_clock(31)  # past PyJWT's forced-refresh cooldown (none in older versions)
    user = uuid.uuid4().hex
    assert (await verifier.verify(signed(other_rsa_key, "k2", user=user))).user_id == user
    assert jwks.hits == hits + 1  # the unknown kid made it refetch the set, once
    assert (await verifier.verify(signed(other_rsa_key, "k2"))).user_id
    assert jwks.hits == hits + 1  # and the new set is cached


async def test_jwks_rotation_is_picked_up_within_the_refetch_cooldown(
    jwks: JwksServer, rsa_key: KeyPair, other_rsa_key: KeyPair, jwks_clock: Any
) -> None:
    jwks.keys = [jwk(rsa_key, "k1", "RS256")]
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks.url))
    assert (await verifier.verify(signed(rsa_key, "k1"))).user_id
    jwks.keys = [jwk(other_rsa_key, "k2", "RS256")]
    jwks_clock(1.1)  # WEDSYNC_JWKS_REFETCH_COOLDOWN defaults to 1 s (PyJWT's own is 30 s)
    assert (await verifier.verify(signed(other_rsa_key, "k2"))).user_id


async def test_jwks_key_withdrawn_from_the_set_stops_verifying(
    jwks: JwksServer, rsa_key: KeyPair, other_rsa_key: KeyPair, jwks_clock: Any
) -> None:
    jwks.keys = [jwk(rsa_key, "k1", "RS256")]
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks.url))
    assert (await verifier.verify(signed(rsa_key, "k1"))).user_id
    jwks.keys = [jwk(other_rsa_key, "k2", "RS256")]
    jwks_clock(31)
    assert (await verifier.verify(signed(other_rsa_key, "k2"))).user_id  # set refetched
    jwks_clock(400)  # even past the JWK set cache lifespan (300 s)
    await refused(verifier, signed(rsa_key, "k1"))


async def test_jwks_unreachable_is_unauthorized_not_a_crash(rsa_key: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url="http://127.0.0.1:9/jwks.json"))
    await refused(verifier, signed(rsa_key, "k1"))


# --- end to end through the app ---------------------------------------------------------------


async def test_http_api_refuses_bad_credentials_with_json_401(settings: Settings) -> None:
    assert settings.auth.jwt_secret
    path = f"/api/weddings/{uuid.uuid4()}"
    forged = jwt.encode(claims(), "not-" + settings.auth.jwt_secret, algorithm="HS256")
    now = int(time.time())
    expired = jwt.encode(
        {"sub": uuid.uuid4().hex, "exp": now - 60}, settings.auth.jwt_secret, algorithm="HS256"
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        for headers in (
            {"Authorization": f"Bearer {forged}"},
            {"Authorization": f"Bearer {expired}"},
            {"Authorization": "Basic x"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Token {issue_token(settings.auth, uuid.uuid4().hex)}"},
            {},
        ):
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            body = r.json()
            assert body["code"] == "unauthorized"
            assert isinstance(body["message"], str) and body["message"]
        # the real thing gets past authentication (404: not a member of that wedding)
        good = issue_token(settings.auth, uuid.uuid4().hex)
        r = await client.get(path, headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


async def test_http_api_with_an_rs256_public_key(settings: Settings, rsa_key: KeyPair) -> None:
    mine = dataclasses.replace(
        settings, auth=dataclasses.replace(settings.auth, jwt_public_key=rsa_key.public_pem)
    )
    good = signed(rsa_key, "any")
    confused = hand_made({"alg": "HS256"}, claims(), rsa_key.public_pem.encode())
    async with AsyncTestClient(app=create_app(mine)) as client:
        path = f"/api/weddings/{uuid.uuid4()}"
        r = await client.get(path, headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 404  # authenticated, not a member
        r = await client.get(path, headers={"Authorization": f"Bearer {confused}"})
        assert r.status_code == 401
        assert r.json()["code"] == "unauthorized"
