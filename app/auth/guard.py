"""Who is calling: the bearer JWT verified once per request, with rate limits applied."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any

from litestar import Request, WebSocket
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler

from app.auth.ratelimit import RateLimits, request_cost
from app.auth.tokens import Identity, TokenVerifier
from app.errors import RateLimited, Unauthorized, refuse_handshake
from app.services import Services
from config.settings import AuthSettings
from runtime.crypto import ContactCipher
from runtime.guest_contacts import GuestContacts
from streams.protocol import Close


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Built once per process by the app factory (``Services.auth``: app/services.py)."""

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


#: probes and the scraper: never refused by the per-IP limit a client may have used up
#: (/metrics needs its token; /readyz is one cheap database round trip)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_PREFIX = "/api/admin/"


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The peer's IP address, or None (a Unix socket, a test transport). Behind a proxy
    named in WEDSYNC_TRUSTED_PROXIES, uvicorn has put the forwarded client here."""
    host = connection.client.host if connection.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The ``Authorization: Bearer`` token, or ``""``."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_admin_token(auth: AuthSettings, token: str) -> bool:
    """Constant-time comparison with the configured admin token (none: never)."""
    expected = auth.admin_token
    if not expected or not token:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


async def limit_request(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """App-wide guard, so it runs before every other guard (a wrong admin or metrics token
    is counted too): an HTTP request counts against its client IP, by its cost; the admin
    API with the right token against that token's own limit; probes not at all. WebSocket
    handshakes have their own limit (``admit_handshake``)."""
    if connection.scope["type"] != ScopeType.HTTP:
        return
    path = connection.scope["path"]
    if path in UNLIMITED_PATHS:
        return
    auth = Services.of(connection.app.state).auth
    cost = request_cost(connection.query_params)
    token = bearer(connection)
    if path.startswith(ADMIN_PREFIX) and is_admin_token(auth.settings, token):
        await auth.limits.check_admin(token, cost)
        return
    await auth.limits.check_ip(client_ip(connection) or "unknown", cost)


async def admit_handshake(socket: WebSocket[Any, Any, Any]) -> bool:
    """First call of a WebSocket handler, before anything touches the database: whether
    the client IP is within ``WEDSYNC_RATE_LIMIT_WS``. If not, the handshake is refused
    with HTTP 429 and ``Retry-After`` (where the server supports denial responses; else it
    is closed before it is accepted, which uvicorn answers with 403) and False returned."""
    auth = Services.of(socket.app.state).auth
    try:
        await auth.limits.check_handshake(client_ip(socket) or "unknown")
    except RateLimited as exc:
        await refuse_handshake(socket, exc, Close.TRY_LATER)
        return False
    return True


async def provide_identity(request: Request[Any, Any, Any], auth: AuthContext) -> Identity:
    """Dependency ``identity``: 401 unless a valid ``Authorization: Bearer <JWT>``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    identity = await auth.verifier.verify(token.strip())
    await auth.limits.check_user(identity.user_id, request_cost(request.query_params))
    return identity
