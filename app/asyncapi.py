"""The WebSocket protocol as an AsyncAPI 3 document, generated from the msgspec frame types.

The frames of ``streams/protocol.py`` (``ClientFrame`` and the ``auth`` frame in,
``ServerFrame`` out) are the source, as for the OpenAPI document and the SDK's types:
``msgspec.json.schema_components`` gives their JSON Schema (as sdk/codegen does), and this
module wraps it in one channel (``/ws/weddings/{wedding_id}``), one message per frame named
by its ``type`` tag, and the two operations of the server: it receives client frames and
sends server frames. The close codes are listed as ``x-close-codes``.

Served at ``/schema/asyncapi.json`` next to ``/schema/openapi.json``; ``docs/asyncapi.json``
is the checked-in copy for tools that read files (``python -m app.asyncapi`` writes it;
tests/test_asyncapi.py fails when it, the served document or the code drift apart).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

import msgspec
from litestar import get
from litestar.datastructures import CacheControlHeader

from streams.protocol import SUBPROTOCOL, AuthFrame, ClientFrame, Close, ServerFrame

PATH = "/schema/asyncapi.json"
CHANNEL = "wedding"
CHECKED_IN = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"

#: what a client may send (the ``auth`` frame only first, on a socket opened without token)
CLIENT_FRAMES: tuple[type[msgspec.Struct], ...] = (*get_args(ClientFrame), AuthFrame)
#: what the server sends
SERVER_FRAMES: tuple[type[msgspec.Struct], ...] = get_args(ServerFrame)

_QUERY = {
    "type": "object",
    "properties": {
        "after_seq": {
            "type": "integer",
            "minimum": 0,
            "description": "resume: replay the events after this seq",
        },
        "epoch": {"type": "string", "description": "the epoch of `after_seq` (from `welcome`)"},
        "batch": {
            "type": "string",
            "enum": ["1"],
            "description": "several frames per WebSocket message, newline separated",
        },
        "token": {
            "type": "string",
            "description": "legacy: the session token (`WEDSYNC_WS_QUERY_TOKEN`)",
        },
    },
}


def _tag(cls: type[msgspec.Struct]) -> str:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType) and isinstance(info.tag, str)
    return info.tag


def _close_codes() -> dict[str, int]:
    return {k: v for k, v in vars(Close).items() if k.isupper() and isinstance(v, int)}


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the WebSocket protocol (docs/protocol.md in prose)."""
    frames = (*CLIENT_FRAMES, *SERVER_FRAMES)
    _, schemas = msgspec.json.schema_components(frames, ref_template="#/components/schemas/{name}")
    messages = {
        cls.__name__: {
            "name": _tag(cls),
            "title": f"`{_tag(cls)}` frame",
            "summary": (cls.__doc__ or "").strip().split("\n\n")[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        }
        for cls in frames
    }

    def refs(classes: tuple[type[msgspec.Struct], ...]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{CHANNEL}/messages/{c.__name__}"} for c in classes]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "WedSync realtime: WebSocket protocol",
            "version": "0.1.0",
            "description": (
                "One socket per member and wedding. Frames are JSON text, one object each, "
                "discriminated by `type` (docs/protocol.md). Authenticate with the session "
                f"token of `POST /api/collaboration/join/{{wedding_id}}`: offer the "
                f"subprotocols `{SUBPROTOCOL}` and `wedsync.token.<session_token>`, or send "
                "an `auth` frame first. Close codes 4000-4499: reconnect and resume; "
                "4500-4999: do not (`x-close-codes`). The HTTP API is /schema/openapi.json."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            CHANNEL: {
                "address": "/ws/weddings/{wedding_id}",
                "title": "A wedding room",
                "parameters": {"wedding_id": {"description": "the wedding's id (a UUID)"}},
                "messages": {
                    c.__name__: {"$ref": f"#/components/messages/{c.__name__}"} for c in frames
                },
                "bindings": {"ws": {"method": "GET", "query": _QUERY, "bindingVersion": "0.1.0"}},
            }
        },
        "operations": {
            "receiveClientFrames": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "summary": "Frames a client sends (the server receives them).",
                "messages": refs(CLIENT_FRAMES),
            },
            "sendServerFrames": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "summary": "Frames the server sends.",
                "messages": refs(SERVER_FRAMES),
            },
        },
        "components": {"messages": messages, "schemas": schemas},
        "x-close-codes": _close_codes(),
    }


def render() -> str:
    """The document as docs/asyncapi.json holds it."""
    return json.dumps(document(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


_served: dict[str, Any] = {}


@get(
    PATH,
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=CacheControlHeader(max_age=3600),
)
def asyncapi_document() -> dict[str, Any]:
    """``GET /schema/asyncapi.json``: made once per process (the code does not change)."""
    if not _served:
        _served.update(document())
    return _served


if __name__ == "__main__":
    sys.stdout.write(render())
