"""What a handler receives by name through Litestar's dependency injection, typed: the
services the app's lifespan opened (:class:`app.services.Services`, the app's typed state)
and, per request, a PostgreSQL connection and the caller's membership of the wedding in the path.

    async def read(self, member: Membership) -> Wedding: ...
    async def decide(self, wedding_id: uuid.UUID, identity: Identity, conns: Connections): ...

``db`` is one pooled connection for the request, released when the handler has returned
(or raised). A handler that also publishes to NATS takes ``conns`` instead and acquires its
connection in a block it leaves before publishing, so a NATS outage never holds connections
of the pool: ``db`` and ``member`` are for handlers whose only I/O is PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

from litestar.datastructures import State
from litestar.di import Provide

from app.auth import AuthContext, Identity, provide_identity
from app.documents.rooms import DocumentHub
from app.gateway import Hub
from app.services import Services
from app.weddings.access import require_member
from app.weddings.store import Membership
from config.settings import Settings
from runtime.connections import Connections
from runtime.db.types import Pooled


def provide_settings(state: State) -> Settings:
    return Services.of(state).settings


def provide_auth(state: State) -> AuthContext:
    return Services.of(state).auth


def provide_conns(state: State) -> Connections:
    return Services.of(state).connections()


def provide_hub(state: State) -> Hub:
    return Services.of(state).gateway()


def provide_documents(state: State) -> DocumentHub:
    return Services.of(state).document_rooms()


async def provide_db(conns: Connections) -> AsyncGenerator[Pooled, None]:
    async with conns.pool.acquire() as conn:
        yield conn


async def provide_member(wedding_id: uuid.UUID, identity: Identity, db: Pooled) -> Membership:
    """The caller's membership of the path's wedding: 404 if they are not in it."""
    return await require_member(db, wedding_id, identity)


DEPENDENCIES = {
    "identity": Provide(provide_identity),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "auth": Provide(provide_auth, sync_to_thread=False),
    "conns": Provide(provide_conns, sync_to_thread=False),
    "hub": Provide(provide_hub, sync_to_thread=False),
    "documents": Provide(provide_documents, sync_to_thread=False),
    "db": Provide(provide_db),
    "member": Provide(provide_member),
}
