"""Reading stored events back (history pages, personal export) whatever the store holds.

A readable event is served as its stored bytes (``msgspec.Raw``): never decoded below its
envelope nor re-encoded, so no nesting depth can break a response. Its envelope is decoded
first, which checks the bytes are JSON. An event that does not decode — not JSON, or nested
too deeply for the decoder (the edge now refuses more than ``streams.limits.MAX_DEPTH``
levels; older gateways stored up to ~1 000) — is served as a placeholder: its envelope as
far as the bytes tell (id, type, channel, actor, ts), ``data: {}``, and ``unreadable: true``
beside it, so one bad event never breaks the history of a whole wedding.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import msgspec

from streams.protocol import Actor


class StoredEvent(msgspec.Struct):
    """The envelope of a stored event (``streams.protocol.Event``), ``data`` undecoded."""

    id: str
    type: str
    channel: str
    actor: Actor
    data: msgspec.Raw
    ts: float


class _Head(msgspec.Struct):
    id: str = ""
    type: str = ""
    channel: str = ""
    actor: Actor | None = None


_event = msgspec.json.Decoder(StoredEvent)
_head = msgspec.json.Decoder(_Head)
# msgspec writes the envelope's fields in order (id, type, channel, actor, data, ts), and a
# quote inside a JSON string is always escaped: the first `,"actor":{...}` is the field
_HEAD = re.compile(rb'^(\{"id":.*?,"actor":\{[^{}]*\})')
_TS = re.compile(rb',"ts":(-?[0-9][0-9.eE+-]*)\}\s*$')


def read_event(raw: bytes) -> StoredEvent | None:
    """The stored event's envelope, or None if it cannot be read back."""
    try:
        return _event.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def placeholder(raw: bytes, channel: str) -> dict[str, Any]:
    """What can be told of an event :func:`read_event` could not read (``actor`` None if
    not even that)."""
    head = _Head(channel=channel)
    if (m := _HEAD.match(raw)) is not None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            head = _head.decode(m.group(1) + b"}")
    ts = 0.0
    if (t := _TS.search(raw[-64:])) is not None:
        with contextlib.suppress(ValueError):
            ts = float(t.group(1))
    actor = None if head.actor is None else msgspec.to_builtins(head.actor)
    return {
        "id": head.id,
        "type": head.type,
        "channel": head.channel or channel,
        "actor": actor,
        "data": {},
        "ts": ts,
    }
