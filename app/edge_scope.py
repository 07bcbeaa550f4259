"""The HTTP and WebSocket edge's database scope: a request for ``/.../{wedding_id}/...``
runs in that wedding's scope (runtime/db/scope.py), so every connection it (and every task it
starts: a socket's readers, its session check at expiry) acquires sees that wedding's rows only.

A route without a wedding in its path gets no scope and sees no wedding-scoped row, unless
its handler opens a named system scope (docs/security.md lists them)."""

from __future__ import annotations

import uuid

from litestar.types import ASGIApp, Receive, Scope, Send

from runtime.db import scope as db_scope


class ScopeMiddleware:
    """Sets the wedding scope from the routed path parameter ``wedding_id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params") or {}
        raw = params.get("wedding_id")
        wedding: uuid.UUID | None
        try:
            wedding = None if raw is None else uuid.UUID(str(raw))
        except ValueError:  # refused by parameter validation later: no scope meanwhile
            wedding = None
        if wedding is None:
            await self.app(scope, receive, send)
            return
        with db_scope.wedding(wedding):
            await self.app(scope, receive, send)
