"""The HTTP API's input rules: every JSON body and every path and query parameter string
is checked by :mod:`streams.limits` before a handler runs (422 ``invalid``), so input no
store can hold is refused up front instead of failing as a 500 in PostgreSQL."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, SerializationException

from app.errors import Invalid
from streams.limits import Unstorable, check, decode_error, text_problem


class EdgeRequest(Request[Any, Any, Any]):
    """The app's request class: its JSON body is decoded once (Litestar caches it) and
    checked whole — typed fields, free-form ``data`` and keys alike."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:  # deeper than the decoder itself goes
            raise Invalid("the JSON body is nested too deeply to decode") from None
        except SerializationException as exc:  # not JSON: 400, as Litestar answers it
            message = decode_error(str(exc.detail), await self.body())
            raise ClientException(message) from None
        try:
            check(value, from_json=True)
        except Unstorable as exc:
            raise Invalid(f"the JSON body is refused: {exc}") from None
        return value


async def check_parameters(request: Request[Any, Any, Any]) -> None:
    """``before_request``: path and query parameter strings hold no NUL or lone surrogate
    (``async``: litestar would run a sync hook in a worker thread, per request)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            raise Invalid(f"path parameter {name}: {problem}")
    for name, value in request.query_params.multi_items():
        if (problem := text_problem(name) or text_problem(value)) is not None:
            raise Invalid(f"query parameter {name!r}: {problem}")
