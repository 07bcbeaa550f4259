"""The app's typed state: one :class:`Services` in ``app.state.services``.

Handlers receive its parts by name (:mod:`app.deps`); code that runs before dependency
injection (guards, the WebSocket admission, ASGI middleware) reads it with
:meth:`Services.of`. Nothing else is kept in ``app.state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from litestar.datastructures import State

if TYPE_CHECKING:  # types only: this module is imported by the modules below
    from app.auth import AuthContext
    from app.documents import DocumentHub
    from app.gateway import Hub
    from config.settings import Settings
    from runtime.connections import Connections


@dataclass(slots=True)
class Services:
    """The app's typed state: built by ``create_app`` (settings, auth) and completed by its
    lifespan (connections, hub). Handlers get its parts by name, never through ``app.state``."""

    settings: Settings
    auth: AuthContext
    conns: Connections | None = None
    hub: Hub | None = None
    documents: DocumentHub | None = None

    @classmethod
    def of(cls, state: State) -> Services:
        services: Services = state.services
        return services

    def connections(self) -> Connections:
        if self.conns is None:  # a request before startup: a wiring mistake, not a client's
            raise RuntimeError("connections not open: did the app's lifespan run?")
        return self.conns

    def gateway(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("hub not open: did the app's lifespan run?")
        return self.hub

    def document_rooms(self) -> DocumentHub:
        if self.documents is None:
            raise RuntimeError("document rooms not open: did the app's lifespan run?")
        return self.documents
