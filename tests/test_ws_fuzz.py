"""WebSocket fuzzing (issue 22): random bytes, wrong shapes, deep nesting, huge numbers and
unicode edge cases sent to a real gateway. The socket answers only with the frame types,
error codes and close codes docs/protocol.md documents, the server stays up, and another
member's socket in the same wedding (on the other gateway process) sends and receives
after every fuzzed frame."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import pytest_asyncio
import websockets
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from tests.kits.world import World, connect, recv, send

pytestmark = pytest.mark.asyncio

PROTOCOL = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
ONE_MIB = 1024 * 1024


def _section(title: str) -> str:
    return PROTOCOL.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


#: what docs/protocol.md documents: server frame types, error codes, close codes
FRAME_TYPES = set(re.findall(r'\{"type": "(\w+)"', _section("Server → client")))
ERROR_CODES = set(re.findall(r"^\| `(\w+)` \|", _section("Error codes (error frames)"), re.M))
CLOSE_CODES = {int(c) for c in re.findall(r"^\| (\d{4}) \|", _section("Close codes"), re.M)}


def test_the_documented_sets_are_read_from_the_docs() -> None:
    assert {"welcome", "ack", "error", "event", "pong", "resumed"} <= FRAME_TYPES
    assert {"invalid", "too_large", "forbidden", "rate_limited"} <= ERROR_CODES
    assert {4000, 4002, 4500} <= CLOSE_CODES


# -- what is sent ------------------------------------------------------------------------

EDGE_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\udc00y",
    "\U0001f600",
    "e\u0301",
    "\u202eevil",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "﷽" * 50,
    "\\u0000",
    "\\",
    '"',
    "\n\r\t",
    "😀" * 300,
]
EDGE_NUMBERS = [
    0,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**40,
    -(10**400),
    1e308,
    -1e-320,
    0.1,
    float("nan"),
    float("inf"),
    float("-inf"),
]

strings = st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=40))
numbers = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(strings, inner, max_size=6)
    ),
    max_leaves=30,
)


@dataclass(frozen=True)
class Deep:
    """An array/object chain around 32 levels (the limit) or far deeper (past the decoder),
    spliced into the JSON text by :func:`encode` (Python's json cannot nest that deep)."""

    levels: int
    inner: Any

    def text(self) -> str:
        inner = json.dumps(self.inner)
        opens = "".join('{"k":' if i % 2 else "[" for i in range(self.levels))
        closes = "".join("}" if i % 2 else "]" for i in reversed(range(self.levels)))
        return opens + inner + closes


deep = st.builds(Deep, st.one_of(st.integers(28, 36), st.integers(500, 3000)), scalars)


# mostly well-formed ids, channels and data objects, so that many frames are stored too
# (no `emergency`: it escalates to SMS in a later module's notifications worker)
good_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=16)
ids = st.one_of(good_ids, good_ids, good_ids, strings, numbers, st.none())
channels = st.one_of(st.sampled_from(["chat", "chat", "timeline", "budget", "guests"]), strings)
objects = st.dictionaries(strings, st.one_of(json_values, deep), max_size=4)
data = st.one_of(objects, objects, objects, json_values, deep)


@st.composite
def shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A frame of a known type with random (mostly wrong) field values."""
    kinds = ["message"] * 4 + ["change"] * 2 + ["presence", "resume", "ping", "hello"]
    kind = draw(st.sampled_from(kinds))
    frame: dict[str, Any] = {"type": kind}
    sane = draw(st.integers(0, 3)) > 0  # a well-formed envelope around random contents
    if kind == "message":
        frame.update(
            id=draw(good_ids if sane else ids),
            channel=draw(st.just("chat") if sane else channels),
            data=draw(objects if sane else data),
        )
    elif kind == "change":
        frame.update(
            id=draw(good_ids if sane else ids),
            entity=draw(st.sampled_from(["guests", "tasks", "budget", "timeline", "vendors"])),
            entity_id=draw(st.one_of(st.from_regex(r"\A[a-z0-9-]{1,12}\Z"), strings)),
            op=draw(st.sampled_from(["create", "update", "delete", "drop"])),
            fields=draw(
                st.one_of(
                    data,
                    st.dictionaries(
                        st.sampled_from(
                            ["name", "title", "rsvp", "plus_ones", "estimated", "notes", "due"]
                        ),
                        scalars,
                        max_size=4,
                    ),
                )
            ),
            base_version=draw(st.one_of(st.none(), numbers)),
        )
    elif kind == "presence":
        frame.update(
            draw(
                st.dictionaries(
                    st.sampled_from(["status", "location", "editing"]),
                    st.one_of(scalars, json_values, st.sampled_from(["active", "idle", "busy"])),
                    max_size=3,
                )
            )
        )
    elif kind == "resume":
        frame.update(after_seq=draw(numbers))
    if not sane and draw(st.booleans()):
        frame[draw(strings)] = draw(scalars)  # an unknown field
    return frame


def encode(value: Any, ascii_only: bool) -> str:
    """JSON text (``NaN``/``Infinity`` kept: not JSON, so refused). Lone surrogates are
    escaped by ``ensure_ascii``; a raw one cannot travel in a text message at all."""
    spliced: list[Deep] = []

    def splice(o: Any) -> str:
        spliced.append(o)
        return f"\x01deep{len(spliced) - 1}\x01"  # control characters are always escaped

    try:
        text = json.dumps(value, ensure_ascii=ascii_only, default=splice)
    except UnicodeEncodeError:
        spliced.clear()
        text = json.dumps(value, default=splice)
    for i, d in enumerate(spliced):
        text = text.replace(f'"\\u0001deep{i}\\u0001"', d.text(), 1)
    return text


@st.composite
def payloads(draw: st.DrawFn) -> str | bytes:
    choice = draw(st.sampled_from(["shaped"] * 6 + ["json", "text", "bytes", "big"]))
    if choice == "bytes":
        return draw(st.binary(max_size=300))
    if choice == "text":
        return draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=300))
    if choice == "big":  # around the 64 KiB limit in bytes, and rarely past 1 MiB
        size = draw(st.sampled_from([16_383, 16_385, 30_000, 70_000, 300_000]))
        char = draw(st.sampled_from(["x", "é", "😀"]))
        return encode(
            {"type": "message", "id": "big", "channel": "chat", "data": {"t": char * size}}, False
        )
    value = draw(shaped()) if choice == "shaped" else draw(json_values)
    text = encode(value, draw(st.booleans()))
    try:
        text.encode()
    except UnicodeEncodeError:  # a raw surrogate: send it escaped
        text = encode(value, True)
    return text


# -- the room ----------------------------------------------------------------------------


@dataclass
class Room:
    world: World
    gateways: list[str]
    fuzzer_token: str
    fuzzer: ClientConnection
    bystander: ClientConnection
    seen: dict[str, int] = field(default_factory=dict)  # what the fuzzer got, by kind

    def documented(self, f: dict[str, Any], who: str) -> None:
        assert f.get("type") in FRAME_TYPES, (who, f)
        if f["type"] == "error":
            assert f["code"] in ERROR_CODES, (who, f)
            assert f["code"] not in ("unavailable", "rate_limited"), (who, f)  # services up
        if f["type"] == "event":
            assert isinstance(f["event"]["data"], dict), (who, f)

    async def reconnect(self) -> None:
        self.fuzzer = await connect(self.gateways[0], self.world.wedding, self.fuzzer_token)
        assert (await recv(self.fuzzer))["type"] == "welcome"

    async def fuzz(self, payload: str | bytes) -> None:
        """Send one payload, then a barrier: a chat message of a fresh id, whose ack comes
        after every answer to the payload (a socket's frames are handled in order; a ping
        would not do, the payload may be a ping too). Every frame up to the barrier's ack
        must be documented. A payload over 1 MiB must close the socket instead (1009; the
        close frame may be lost to a TCP reset, as the server stops reading while the
        client still writes), and the fuzzer reconnects."""
        size = len(payload.encode() if isinstance(payload, str) else payload)
        barrier = "barrier-" + uuid.uuid4().hex[:12]
        try:
            await self.fuzzer.send(payload)
            await send(self.fuzzer, type="message", id=barrier, channel="chat", data={})
            while (f := await recv(self.fuzzer))["type"] != "ack" or f["id"] != barrier:
                self.documented(f, "fuzzer")
                key = f["type"] + (f":{f['code']}" if f["type"] == "error" else "")
                self.seen[key] = self.seen.get(key, 0) + 1
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            assert size > ONE_MIB, f"closed with {code} after a frame of {size} bytes"
            assert code in (1009, None), code
            self.seen["closed"] = self.seen.get("closed", 0) + 1
            await self.reconnect()
        else:
            assert size <= ONE_MIB, f"a frame of {size} bytes did not close the socket"

    async def bystander_round_trip(self) -> None:
        """The other member sends a chat message and gets its ack and its event back."""
        mid = uuid.uuid4().hex[:12]
        await send(self.bystander, type="message", id=mid, channel="chat", data={"m": mid})
        got: set[str] = set()
        while got != {"ack", "event"}:
            f = await recv(self.bystander)
            self.documented(f, "bystander")
            if f["type"] == "ack" and f["id"] == mid:
                got.add("ack")
            elif f["type"] == "event" and f["event"]["data"] == {"m": mid}:
                got.add("event")


@pytest_asyncio.fixture(scope="module")
async def room(settings: Settings, gateways: list[str]) -> AsyncIterator[Room]:
    world = World(settings, gateways[0])
    await world.create()
    planner = await world.add("planner")
    token = await world.join(world.couple)
    async with contextlib.AsyncExitStack() as stack:
        fuzzer = await connect(gateways[0], world.wedding, token)
        bystander = await connect(gateways[1], world.wedding, await world.join(planner))
        stack.push_async_callback(bystander.close)
        for ws in (fuzzer, bystander):
            assert (await recv(ws))["type"] == "welcome"
        r = Room(world, gateways, token, fuzzer, bystander)
        yield r
        await r.fuzzer.close()


@hypothesis.settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=payloads())
async def test_fuzzed_frames_get_documented_answers_and_the_room_keeps_working(
    room: Room, payload: str | bytes
) -> None:
    await room.fuzz(payload)
    await room.bystander_round_trip()


async def test_after_the_fuzzing_the_fuzzer_and_the_server_still_work(room: Room) -> None:
    """(Runs after the fuzz test in this module: the same room and sockets.)"""
    await send(room.fuzzer, type="message", id="after", channel="chat", data={"text": "ok"})
    while (f := await recv(room.fuzzer))["type"] != "ack":
        room.documented(f, "fuzzer")
    await room.bystander_round_trip()
