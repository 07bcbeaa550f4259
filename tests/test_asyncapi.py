"""The machine-readable WebSocket protocol (issue 18): the AsyncAPI document a real
`wedsync api` serves is what app/asyncapi.py makes from the msgspec types now, and so is
the checked-in docs/asyncapi.json; every frame type of streams/protocol.py is in it, and
every ``$ref`` in it resolves."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec

from app.asyncapi import CHECKED_IN, PATH, document
from config.settings import Settings
from streams import protocol
from tests.kits.world import gateway_processes


def tagged_frames() -> dict[str, str]:
    """Every struct of streams/protocol.py that goes over the socket: class name -> tag."""
    out = {}
    for name, cls in vars(protocol).items():
        if inspect.isclass(cls) and issubclass(cls, msgspec.Struct) and name.endswith("Frame"):
            info = msgspec.inspect.type_info(cls)
            assert isinstance(info, msgspec.inspect.StructType) and isinstance(info.tag, str)
            out[name] = info.tag
    return out


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_the_served_document_is_the_code_and_the_checked_in_copy(settings: Settings) -> None:
    async with (
        gateway_processes(settings, 1) as [(base, _)],
        httpx.AsyncClient(base_url=base) as c,
    ):
        served = await c.get(PATH)
        openapi = await c.get("/schema/openapi.json")
    assert served.status_code == 200 and openapi.status_code == 200
    assert served.headers["content-type"].startswith("application/json")
    generated = document()
    assert served.json() == generated
    assert json.loads(CHECKED_IN.read_text()) == generated, (
        "docs/asyncapi.json is stale: `python -m app.asyncapi > docs/asyncapi.json`"
    )
    assert PATH not in openapi.json()["paths"]  # beside the OpenAPI document, not in it


def test_every_frame_is_a_message_named_by_its_tag() -> None:
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    messages = doc["components"]["messages"]
    frames = tagged_frames()
    assert len(frames) >= 15
    for name, tag in frames.items():
        assert messages[name]["name"] == tag, name
    # the server's operations: it receives what clients send, sends the rest
    ops = doc["operations"]
    received = {r["$ref"].rsplit("/", 1)[1] for r in ops["receiveClientFrames"]["messages"]}
    sent = {r["$ref"].rsplit("/", 1)[1] for r in ops["sendServerFrames"]["messages"]}
    assert {"MessageFrame", "ChangeFrame", "PresenceFrame", "AuthFrame"} <= received
    assert {"WelcomeFrame", "EventFrame", "AckFrame", "NotificationFrame"} <= sent
    assert received | sent == set(messages) and not received & sent
    assert doc["x-close-codes"]["INVALID_SESSION"] == protocol.Close.INVALID_SESSION


def test_every_reference_resolves() -> None:
    doc = document()
    found = list(refs(doc))
    assert len(found) > 40
    for ref in found:
        assert resolve(doc, ref) is not None
    # a frame's payload is its JSON Schema, with the tag as a constant
    welcome = resolve(doc, doc["components"]["messages"]["WelcomeFrame"]["payload"]["$ref"])
    assert welcome["properties"]["type"]["enum"] == ["welcome"]
