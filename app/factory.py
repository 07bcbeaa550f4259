"""``create_app(settings)``: the Litestar application, its lifespan owning the connections."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import trace

from app.admin_api import AdminController
from app.auth import AuthContext, limit_by_ip, provide_identity
from app.collaboration import CollaborationController
from app.connections import connect, prepare
from app.edge import EdgeRequest, check_parameters
from app.errors import EXCEPTION_HANDLERS
from app.events import EventsController
from app.gateway import Hub, wedding_socket
from app.health import HealthController
from app.me_api import MeController
from app.metrics import (
    ConsumerLag,
    MetricsResponder,
    metrics_endpoint,
    watch_pool,
    worker_consumers,
)
from app.notifications_api import InboxController, WeddingNotificationsController
from app.presence_api import PresenceController
from app.state_api import StateController
from app.webhooks_api import WebhooksController
from app.weddings import WeddingController
from config.logging import configure_logging
from config.secrets import with_dev_secrets
from config.settings import Settings
from config.telemetry import Telemetry


async def _before_request(request: Request[Any, Any, Any]) -> None:
    """Names the request's span after its route (``GET /api/weddings/{wedding_id}``:
    one name per endpoint, no ids; the tracing middleware starts it before routing), then
    counts the request against its client IP and checks its parameters."""
    route = request.scope.get("path_template")
    if route:
        span = trace.get_current_span()
        span.update_name(f"{request.method} {route}")
        span.set_attribute("http.route", route)
    await limit_by_ip(request)
    check_parameters(request)


def create_app(settings: Settings) -> Litestar:
    """The application for ``settings`` (services must be configured: URLs and keys)."""
    auth = AuthContext.build(settings.auth)

    telemetry = Telemetry(settings.telemetry, "api")

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with (
            telemetry,
            connect(settings, name=f"wedsync-api-{os.getpid()}") as conns,
        ):
            await prepare(conns, settings)
            app.state.conns = conns
            watch_pool(conns.pool)
            lag = ConsumerLag(conns.js, worker_consumers(settings), settings.telemetry.lag_every)
            async with (
                MetricsResponder(conns.nc, telemetry),
                lag,
                Hub(conns.nc, conns.js, conns.pool, settings) as hub,
            ):
                app.state.hub = hub
                yield

    http_tracing = OpenTelemetryConfig(
        scopes={ScopeType.HTTP},
        exclude_spans=["receive", "send"],
        exclude=["/metrics", "/healthz", "/readyz"],
    )
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
            AdminController,
            wedding_socket,
            metrics_endpoint,
        ],
        dependencies={"identity": Provide(provide_identity)},
        before_request=_before_request,
        request_class=EdgeRequest,  # JSON bodies checked by streams/limits.py
        lifespan=[lifespan],
        # HTTP requests only: a WebSocket's frames get spans of their own (app/gateway)
        plugins=[OpenTelemetryPlugin(http_tracing)],
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
