"""The demo app of ``wedsync dev``: a page at ``/demo/`` built on the TypeScript SDK, and the
development sign-in it uses.

Only when ``WEDSYNC_DEV_DEMO`` is on (``wedsync dev`` turns it on; ``wedsync api`` leaves it
off, so neither route exists there: 404). ``POST /api/dev/token`` signs a user JWT for any
user id it is given, with the configured HS256 secret: it is a sign-in without a password,
for a developer's machine. The page (``static/``: HTML and ES modules, no bundler) imports
the SDK's compiled modules from ``static/sdk/`` (``python -m sdk.demo_bundle`` copies them;
docs/demo.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import post
from litestar.static_files import create_static_files_router

from app.auth import issue_token
from config.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_TTL = 24 * 3600.0


class DemoSignIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None


class DemoToken(msgspec.Struct):
    user_id: str
    token: str


@post("/api/dev/token", include_in_schema=False, status_code=201, sync_to_thread=False)
def demo_token(data: DemoSignIn, settings: Settings) -> DemoToken:
    """A user JWT for ``user_id``: the demo's sign-in (development only)."""
    token = issue_token(settings.auth, data.user_id, name=data.name, ttl=TOKEN_TTL)
    return DemoToken(user_id=data.user_id, token=token)


def demo_handlers(settings: Settings) -> list[Any]:
    """The demo's routes, or none outside development."""
    if not settings.dev.demo:
        return []
    pages = create_static_files_router(
        path="/demo", directories=[STATIC], html_mode=True, include_in_schema=False, name="demo"
    )
    return [demo_token, pages]
