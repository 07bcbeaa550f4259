"""``create_app(settings)``: the Litestar application, its lifespan owning the connections."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import trace

from app.access_log import AccessLog
from app.admin.routes import AdminController
from app.asyncapi import asyncapi_document
from app.auth import AuthContext, limit_request
from app.collaboration.routes import CollaborationController
from app.cors import cors_config
from app.demo import demo_handlers
from app.deps import DEPENDENCIES
from app.documents import DocumentController, DocumentHub, document_socket
from app.edge import EdgeRequest, check_parameters
from app.edge_scope import ScopeMiddleware
from app.errors import EXCEPTION_HANDLERS
from app.events.routes import EventsController
from app.gateway import Hub, wedding_socket
from app.health import HealthController
from app.metrics import (
    ConsumerLag,
    MetricsResponder,
    metrics_endpoint,
    watch_pool,
    worker_consumers,
)
from app.notifications.routes import InboxController, WeddingNotificationsController
from app.openapi import document_errors, openapi_config
from app.presence.routes import PresenceController
from app.privacy.routes import MeController
from app.services import Services
from app.state.routes import StateController
from app.webhooks.routes import WebhooksController
from app.weddings.routes import WeddingController
from config.logging import configure_logging
from config.secrets import require_secrets
from config.settings import Settings
from config.telemetry import Telemetry
from runtime import gc_pauses
from runtime.connections import connect, prepare


async def _name_span(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Names the request's span after its route (``GET /api/weddings/{wedding_id}``:
    one name per endpoint, no ids; the tracing middleware starts it before routing). The
    first guard, so a request refused by a later one is named too. ``async`` although it
    never awaits: litestar runs a sync guard in a worker thread, a thread hop per request
    and per WebSocket handshake."""
    route = connection.scope.get("path_template")
    if route and connection.scope["type"] == ScopeType.HTTP:
        span = trace.get_current_span()
        span.update_name(f"{connection.scope['method']} {route}")
        span.set_attribute("http.route", route)


def create_app(settings: Settings) -> Litestar:
    """The application for ``settings`` (services must be configured: URLs and keys)."""
    services = Services(settings=settings, auth=AuthContext.build(settings.auth))

    telemetry = Telemetry(settings.telemetry, "api")

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with (
            telemetry,
            connect(settings, name=f"wedsync-api-{os.getpid()}") as conns,
        ):
            await prepare(conns, settings)
            services.conns = conns
            watch_pool(conns.pool)
            gc_pauses.watch()
            server = settings.server
            lag = ConsumerLag(conns.js, worker_consumers(settings), settings.telemetry.lag_every)
            async with (
                gc_pauses.Freezer(server.gc_freeze_every, server.gc_reclaim_every),
                MetricsResponder(conns.nc, telemetry),
                lag,
                Hub(conns.nc, conns.js, conns.pool, settings) as hub,
                DocumentHub(
                    conns.nc, conns.js, conns.pool, settings.gateway.max_per_user
                ) as documents,
            ):
                conns.on_reconnect.append(hub.resubscribe)
                conns.on_reconnect.append(documents.resubscribe)
                services.hub = hub
                services.documents = documents
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
            DocumentController,
            document_socket,  # /ws/weddings/{id}/documents/{name}: y-websocket (Yjs)
            metrics_endpoint,
            asyncapi_document,  # /schema/asyncapi.json: the WebSocket protocol
            *demo_handlers(settings),  # `wedsync dev` only: /demo/ and /api/dev/token
        ],
        dependencies=DEPENDENCIES,  # identity, settings, auth, conns, hub, db, member
        # before every other guard: a request a later guard refuses is named and counted
        guards=[_name_span, limit_request],
        # then path and query parameters (NUL, lone surrogates, int64) and JSON bodies
        # (streams/limits.py) are checked before any handler sees them
        before_request=check_parameters,
        # every request for /.../{wedding_id}/... sees that wedding's rows only (RLS)
        middleware=[ScopeMiddleware],
        request_class=EdgeRequest,
        lifespan=[lifespan],
        # HTTP requests only: a WebSocket's frames get spans of their own (app/gateway)
        plugins=[OpenTelemetryPlugin(http_tracing)],
        exception_handlers=EXCEPTION_HANDLERS,
        # logging is config/logging.py's (levels, JSON, trace ids, no query strings):
        # Litestar's default would replace the root handler and level
        logging_config=None,
        openapi_config=openapi_config(),
        cors_config=cors_config(settings.server),  # WEDSYNC_CORS_ORIGINS (app/cors.py)
    )
    document_errors(app)  # every operation's error responses and security, in one place
    app.state.services = services
    return app


def app_from_env() -> AccessLog:
    """Factory for each server process of ``wedsync api``: settings built once, here
    (secrets come from the environment: `wedsync dev` passes its generated ones)."""
    settings = require_secrets(Settings.from_env(os.environ))
    configure_logging(settings.log, process=f"api[{os.getpid()}]")
    return AccessLog(create_app(settings))
