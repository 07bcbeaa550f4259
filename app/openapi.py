"""The OpenAPI document: security schemes, and the error responses of every operation.

One place instead of every controller: ``document_errors(app)`` walks the app's routes once,
after they are built and before the document is first generated, and gives each operation
the ``{code, message}`` error responses (``streams.schemas.ErrorBody``) that its kind of
operation can return, decided by what it depends on:

| status | code | documented on |
|---|---|---|
| 400 | `invalid` | operations with parameters or a body (a body that is not JSON) |
| 401 | `unauthorized` | operations needing a user JWT (`identity`) or the admin token |
| 403 | `forbidden` | operations on a wedding (a member whose role may not) |
| 404 | `not_found` | operations with a path parameter (unknown, or not the caller's) |
| 409 | `conflict` | operations that change a wedding or the admin API's publishes |
| 413 | `too_large` | operations with a body (over Litestar's body size limit) |
| 422 | `invalid` | operations with parameters or a body |
| 429 | `rate_limited` | every rate-limited operation (not `/healthz`, `/readyz`), `Retry-After` |
| 503 | `unavailable` | every operation but `/healthz` |

A status an operation can never return may be documented on it (the rule is by kind); a
status it returns is never missing: schemathesis checks that (tests/test_openapi.py).
Responses a handler declares itself win over these.

The document is ``/schema/openapi.json`` (and ``.yaml``); ``/schema`` is a Redoc page whose
script we serve ourselves (:class:`LocalRedoc`).
"""

from __future__ import annotations

import openapi_ui_bundles
from litestar import Litestar, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import RedocRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import File
from litestar.routes import HTTPRoute

from app.admin.routes import require_admin
from app.auth.guard import UNLIMITED_PATHS
from streams.schemas import ErrorBody, Readiness

USER_SCHEME = "UserJWT"
ADMIN_SCHEME = "AdminToken"

SECURITY_SCHEMES = {
    USER_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A user JWT (`sub` is the user id; HS256, RS256 or ES256: docs/api.md).",
    ),
    ADMIN_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The server API's token, `WEDSYNC_ADMIN_TOKEN` (docs/api.md#admin-api).",
    ),
}

_WHEN = {
    400: "`invalid`: a malformed request (a body that is not JSON)",
    401: "`unauthorized`: a missing, malformed, forged or expired bearer token",
    403: "`forbidden`: a member whose role may not do this",
    404: "`not_found`: an unknown resource, or one the caller may not know of",
    409: "`conflict`: not possible in the current state (e.g. a cancelled wedding)",
    413: "`too_large`: the body is over the size limit",
    422: "`invalid`: parameters or a body that do not match the schema",
    429: "`rate_limited`: too many requests; retry after `Retry-After` seconds",
    503: "`unavailable`: NATS or PostgreSQL is not answering; retry",
}
_CHANGES = {"POST", "PUT", "PATCH", "DELETE"}

#: responses whose body is not an ErrorBody, by path and status
_OWN_BODIES: dict[str, dict[int, ResponseSpec]] = {
    "/readyz": {
        503: ResponseSpec(
            Readiness, description="Not ready: the failing check is named.", generate_examples=False
        )
    },
}


SCHEMA_PATH = "/schema"
REDOC_SCRIPT = "/redoc-assets/redoc.standalone.js"  # under SCHEMA_PATH


@get(
    REDOC_SCRIPT,
    include_in_schema=False,
    media_type="text/javascript",
    cache_control=CacheControlHeader(max_age=24 * 3600),
    sync_to_thread=False,
)
def redoc_script() -> File:
    """The script alone (the package's folder also holds a demo page loading another spec)."""
    return File(
        openapi_ui_bundles.redoc.static_path / "redoc.standalone.js",
        filename="redoc.standalone.js",
        content_disposition_type="inline",
        media_type="text/javascript",
    )


class LocalRedoc(RedocRenderPlugin):
    """Redoc at ``/schema`` (and ``/schema/redoc``) with its script served from the
    ``openapi-ui-bundles`` package: Litestar's default page loads Redoc from cdn.redoc.ly,
    fonts from Google and its icon from jsDelivr, so offline it stayed blank, and online it
    ran third-party code on our origin."""

    def __init__(self) -> None:
        super().__init__(
            path=["/", "/redoc"],
            js_url=SCHEMA_PATH + REDOC_SCRIPT,
            google_fonts=False,
            favicon="",
        )

    def receive_router(self, router: Router) -> None:
        router.register(redoc_script)


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="WedSync realtime",
        version="0.1.0",
        path=SCHEMA_PATH,
        components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        # openapi.json is added by Litestar; yaml as before; no UI that needs a CDN
        render_plugins=[LocalRedoc(), YamlRenderPlugin()],
    )


def _guarded_by_admin(handler: HTTPRouteHandler) -> bool:
    return any(require_admin in (layer.guards or []) for layer in handler.ownership_layers)


def statuses(handler: HTTPRouteHandler, path: str) -> set[int]:
    """The error statuses of one operation, by the rule in the module docstring."""
    params = handler.parsed_fn_signature.parameters
    admin = _guarded_by_admin(handler)
    out: set[int] = set()
    if path != "/healthz":
        out.add(503)
    if path not in UNLIMITED_PATHS:
        out.add(429)
    if "identity" in params or admin:
        out.add(401)
    has_body = "data" in params
    if has_body or "{" in path or set(params) - {"identity", "state", "request", "self"}:
        out |= {400, 422}
    if has_body:
        out.add(413)
    if "{" in path:
        out.add(404)
    wedding = "{wedding_id}" in path
    if wedding and not admin:
        out.add(403)
    if (wedding or admin) and handler.http_methods & _CHANGES:
        out.add(409)
    return out


def _error(status: int) -> ResponseSpec:
    return ResponseSpec(ErrorBody, description=_WHEN[status], generate_examples=False)


def document_errors(app: Litestar) -> None:
    """Give every operation in the schema its error responses and security requirement."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            responses: dict[int, ResponseSpec] = {
                s: _error(s) for s in statuses(handler, route.path_format)
            }
            responses |= _OWN_BODIES.get(route.path_format, {})
            responses |= dict(handler.responses or {})
            handler.responses = responses
            if _guarded_by_admin(handler):
                handler.security = [{ADMIN_SCHEME: []}]
            elif "identity" in handler.parsed_fn_signature.parameters:
                handler.security = [{USER_SCHEME: []}]
