"""User JWTs: verification (HS256 secret, RS256/ES256 PEM key or JWKS) and dev issuance.

PyJWT does the cryptography. The key is chosen by the token's ``alg`` among the kinds
configured, and each key is only ever used with its own algorithm family, so an RSA public
key can never be used as an HMAC secret (algorithm confusion) and ``alg: none`` is refused.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec

from app.errors import ReservedSubject, Unauthorized
from config.settings import AuthSettings
from streams.api import EMAIL_PATTERN
from streams.limits import NAME_MAX, text_problem
from streams.protocol import reserved_user_id

ASYMMETRIC = ("RS256", "ES256")
_EMAIL = re.compile(EMAIL_PATTERN)


class Identity(msgspec.Struct, frozen=True):
    user_id: str
    name: str | None = None
    email: str | None = None


def _pem(value: str) -> str:
    return value if "-----BEGIN" in value else Path(value).read_text()


class TokenVerifier:
    def __init__(self, auth: AuthSettings) -> None:
        self._secret = auth.jwt_secret
        self._public = _pem(auth.jwt_public_key) if auth.jwt_public_key else None
        self._jwks = (
            jwt.PyJWKClient(
                auth.jwks_url,
                cache_keys=False,
                lifespan=300,
                cooldown_duration=auth.jwks_refetch_cooldown,
            )
            if auth.jwks_url
            else None
        )
        self._issuer = auth.jwt_issuer
        self._audience = auth.jwt_audience
        if not (self._secret or self._public or self._jwks):
            raise ValueError(
                "no JWT key configured: set WEDSYNC_JWT_SECRET, _PUBLIC_KEY or _JWKS_URL"
            )

    async def _key(self, token: str, alg: str) -> Any:
        if alg == "HS256" and self._secret:
            return self._secret
        if alg in ASYMMETRIC:
            if self._jwks is not None:
                # PyJWKClient refetches the set when the kid is unknown: rotated keys work.
                found = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                return found.key
            if self._public is not None:
                return self._public
        raise Unauthorized(f"token algorithm {alg!r} is not accepted")

    async def verify(self, token: str) -> Identity:
        try:
            alg = str(jwt.get_unverified_header(token).get("alg", ""))
            key = await self._key(token, alg)
            required = ["exp", "sub"]
            if self._issuer:
                required.append("iss")
            if self._audience:
                required.append("aud")
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": required, "verify_aud": self._audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidSignatureError as exc:  # the usual dev mistake: say what to check
            raise Unauthorized(
                f"invalid token: {exc}: not signed with this server's key (WEDSYNC_JWT_SECRET, "
                "_PUBLIC_KEY or _JWKS_URL; a `wedsync token` must read the same secret or, "
                "in dev, the same data dir)"
            ) from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128 or text_problem(sub):
            raise Unauthorized("invalid token: bad sub")
        if reserved_user_id(sub):
            raise ReservedSubject(f"sub {sub!r} is reserved for the system, not a user id")
        name, email = profile_name(claims.get("name")), profile_email(claims.get("email"))
        return Identity(user_id=sub, name=name, email=email)


def profile_name(claim: Any) -> str | None:
    """The ``name`` claim as a display name: a string, stripped, cut to ``NAME_MAX``
    characters; ignored (None) if it is anything else, blank, or not storable text. The
    claims are optional profile hints, so a bad one never refuses the token."""
    if not isinstance(claim, str) or text_problem(claim):
        return None
    return claim.strip()[:NAME_MAX] or None


def profile_email(claim: Any) -> str | None:
    """The ``email`` claim if it is a plausible address (``streams.api.Email``), else None."""
    if not isinstance(claim, str) or len(claim) > 254 or text_problem(claim):
        return None
    return claim if _EMAIL.search(claim) else None


def issue_token(
    auth: AuthSettings,
    user_id: str,
    *,
    name: str | None = None,
    email: str | None = None,
    ttl: float = 3600,
) -> str:
    """An HS256 token signed with the configured secret (``wedsync token``, tests)."""
    if not auth.jwt_secret:
        raise ValueError("no WEDSYNC_JWT_SECRET to sign with")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if name:
        claims["name"] = name
    if email:
        claims["email"] = email
    if auth.jwt_issuer:
        claims["iss"] = auth.jwt_issuer
    if auth.jwt_audience:
        claims["aud"] = auth.jwt_audience
    return jwt.encode(claims, auth.jwt_secret, algorithm="HS256")
