"""``create_app(settings)``: the Litestar application, its lifespan owning the connections."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app.auth import AuthContext, limit_by_ip, provide_identity
from app.collaboration import CollaborationController
from app.connections import connect, prepare
from app.errors import EXCEPTION_HANDLERS
from app.events import EventsController
from app.gateway import Hub, wedding_socket
from app.health import HealthController
from app.me_api import MeController
from app.notifications_api import InboxController, WeddingNotificationsController
from app.presence_api import PresenceController
from app.state_api import StateController
from app.webhooks_api import WebhooksController
from app.weddings import WeddingController
from config.logging import configure_logging
from config.secrets import with_dev_secrets
from config.settings import Settings


def create_app(settings: Settings) -> Litestar:
    """The application for ``settings`` (services must be configured: URLs and keys)."""
    auth = AuthContext.build(settings.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with connect(settings, name=f"wedsync-api-{os.getpid()}") as conns:
            await prepare(conns, settings)
            app.state.conns = conns
            async with Hub(conns.nc, conns.js, conns.pool, settings) as hub:
                app.state.hub = hub
                yield

    app = Litestar(
        route_handlers=[
            HealthController,
            WeddingController,
            CollaborationController,
            EventsController,
            PresenceController,
            StateController,
            InboxController,
            WeddingNotificationsController,
            WebhooksController,
            MeController,
            wedding_socket,
        ],
        dependencies={"identity": Provide(provide_identity)},
        before_request=limit_by_ip,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="WedSync realtime", version="0.1.0", path="/schema"),
    )
    app.state.settings = settings
    app.state.auth = auth
    return app


def app_from_env() -> Litestar:
    """Factory for each server process of ``wedsync api``: settings built once, here."""
    settings = with_dev_secrets(Settings.from_env(os.environ))
    configure_logging(settings.log, process=f"api[{os.getpid()}]")
    return create_app(settings)
