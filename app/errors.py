"""One error taxonomy with stable codes, mapped to HTTP in exactly one place.

Over WebSocket the same errors are spelled the same: error frames carry a
``streams.protocol.ErrorCode`` (built in one place, ``Connection.refuse``), and a socket
closes with a ``streams.protocol.Close`` code (docs/protocol.md)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from litestar import MediaType, Request, Response, WebSocket
from litestar.exceptions import HTTPException, ValidationException
from litestar.types.asgi_types import WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from streams.protocol import Close
from streams.schemas import ErrorBody

log = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of every error a client may see. ``code`` is stable; ``message`` is for humans."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class Unauthorized(ApplicationError):
    status, code = 401, "unauthorized"


class ReservedSubject(Unauthorized):
    """A token whose ``sub`` is an id the system uses for itself (``server``, ``system``…)."""

    code = "reserved_subject"


class Forbidden(ApplicationError):
    status, code = 403, "forbidden"


class NotFound(ApplicationError):
    status, code = 404, "not_found"


class Conflict(ApplicationError):
    status, code = 409, "conflict"


class Invalid(ApplicationError):
    status, code = 422, "invalid"


class TooLarge(ApplicationError):
    status, code = 413, "too_large"


class RateLimited(ApplicationError):
    status, code = 429, "rate_limited"


class Unavailable(ApplicationError):
    status, code = 503, "unavailable"


_HTTP_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


def _respond(status: int, code: str, message: str, headers: dict[str, str]) -> Response[Any]:
    return Response(
        content=ErrorBody(code=code, message=message),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def application_error_handler(_: Request[Any, Any, Any], exc: ApplicationError) -> Response[Any]:
    return _respond(exc.status, exc.code, exc.message, exc.headers)


def http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        status = 422
        message = (
            "; ".join(
                str(e.get("message", "")) + (f" ({e['key']})" if e.get("key") else "")
                for e in (exc.extra if isinstance(exc.extra, list) else [])
            )
            or exc.detail
        )
    else:
        message = exc.detail
    return _respond(status, _HTTP_CODES.get(status, "error"), message, dict(exc.headers or {}))


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything else is a bug: logged with its traceback (the path, never the query string,
    which may hold a token), answered in the same ``{code, message}`` format."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(500, "internal", "internal server error", {})


EXCEPTION_HANDLERS: Any = {
    ApplicationError: application_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}


async def refuse_handshake(
    socket: WebSocket[Any, Any, Any], exc: ApplicationError, close: Close
) -> None:
    """Refuse a WebSocket upgrade with ``exc`` as an HTTP response (its status, headers and
    ``{code, message}`` body) where the server supports denial responses; elsewhere the
    handshake is closed with ``close`` before it is accepted (which uvicorn answers with 403)."""
    await socket.receive()  # the websocket.connect event
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(close, exc.message)
        return
    body = msgspec.json.encode(ErrorBody(code=exc.code, message=exc.message))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    start: WebSocketResponseStartEvent = {
        "type": "websocket.http.response.start",
        "status": exc.status,
        "headers": headers,
    }
    await socket.send(start)
    done: WebSocketResponseBodyEvent = {
        "type": "websocket.http.response.body",
        "body": body,
        "more_body": False,
    }
    await socket.send(done)
