"""Which other origins' pages may use the API: CORS for HTTP, the ``Origin`` check for WebSockets.

One list, ``WEDSYNC_CORS_ORIGINS``. HTTP: Litestar's ``CORSConfig`` answers preflights and
adds ``Access-Control-Allow-Origin`` for a listed origin only (an unlisted one gets no CORS
headers, so its page cannot read the response). WebSocket: browsers do not apply CORS to the
handshake, so a page on any site could open a socket to us with whatever credentials it
holds (cross-site WebSocket hijacking). ``admit_origin`` refuses a handshake whose ``Origin``
is present, not listed and not the API's own with HTTP 403 before any session work; a
handshake without ``Origin`` (a server, a mobile app, a CLI: not a browser) is let through.
Credentials are bearer tokens, never cookies: no ``Access-Control-Allow-Credentials``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import WebSocket
from litestar.config.cors import CORSConfig

from app.errors import Forbidden, refuse_handshake
from app.services import Services
from config.settings import ServerSettings, Settings
from streams.protocol import Close

#: a frontend dev server `wedsync dev` allows besides its own origin (Vite's default port)
DEV_FRONTEND = "http://localhost:5173"

REFUSED = "this page's origin may not open WebSockets here (WEDSYNC_CORS_ORIGINS)"


def cors_config(server: ServerSettings) -> CORSConfig | None:
    """The HTTP CORS policy, or None (no CORS headers at all) when no origin is listed."""
    origins = server.origins()
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["authorization", "content-type", "x-device-fingerprint"],  # join's header
        expose_headers=["retry-after"],
        allow_credentials=False,
        max_age=600,
    )


def with_dev_origins(settings: Settings) -> Settings:
    """``wedsync dev``: its own origin (both loopback spellings) and ``DEV_FRONTEND``
    allowed, unless ``WEDSYNC_CORS_ORIGINS`` was set."""
    server = settings.server
    if server.cors_origins:
        return settings
    own = [f"http://{host}:{server.port}" for host in ("127.0.0.1", "localhost")]
    if server.host not in ("127.0.0.1", "localhost", "0.0.0.0", "::"):
        own.append(f"http://{server.host}:{server.port}")
    origins = ",".join([*own, DEV_FRONTEND])
    return dataclasses.replace(settings, server=dataclasses.replace(server, cors_origins=origins))


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a handshake with this ``Origin`` (None: absent) may go on: absent, listed,
    or the API's own (same host and port as the ``Host`` it was sent to)."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in allowed:
        return True
    _, sep, netloc = origin.partition("://")
    return bool(sep) and host is not None and netloc == host.strip().lower()


async def admit_origin(socket: WebSocket[Any, Any, Any]) -> bool:
    """First check of a WebSocket handshake: False (and the handshake refused with HTTP 403
    ``forbidden``) for a browser page of an origin that is not allowed."""
    settings = Services.of(socket.app.state).settings
    if origin_allowed(
        socket.headers.get("origin"), socket.headers.get("host"), settings.server.origins()
    ):
        return True
    await refuse_handshake(socket, Forbidden(REFUSED), Close.FORBIDDEN)
    return False
