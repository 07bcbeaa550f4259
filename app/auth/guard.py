"""Who is calling: the bearer JWT verified once per request, with rate limits applied."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from app.auth.crypto import ContactCipher
from app.auth.guest_contacts import GuestContacts
from app.auth.ratelimit import RateLimits
from app.auth.tokens import Identity, TokenVerifier
from app.errors import Unauthorized
from config.settings import AuthSettings


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Built once per process by the app factory and kept in ``app.state.auth``."""

    settings: AuthSettings
    verifier: TokenVerifier
    cipher: ContactCipher
    limits: RateLimits
    contacts: GuestContacts  # guest-list contacts, sealed in entity fields and events

    @classmethod
    def build(cls, auth: AuthSettings) -> AuthContext:
        if not auth.data_key:
            raise ValueError("no WEDSYNC_DATA_KEY configured to encrypt contact details")
        cipher = ContactCipher(auth.data_key)
        return cls(auth, TokenVerifier(auth), cipher, RateLimits(auth), GuestContacts(cipher))


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The peer's IP address, or None (a Unix socket, a test transport)."""
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def limit_by_ip(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: every request counts against its client IP."""
    auth: AuthContext = request.app.state.auth
    await auth.limits.check_ip(client_ip(request) or "unknown")


async def provide_identity(request: Request[Any, Any, Any], state: State) -> Identity:
    """Dependency ``identity``: 401 unless a valid ``Authorization: Bearer <JWT>``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    auth: AuthContext = state.auth
    identity = await auth.verifier.verify(token.strip())
    await auth.limits.check_user(identity.user_id)
    return identity
