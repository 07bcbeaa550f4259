"""The wire protocols the load generator speaks over one raw WebSocket.

`WedSync` is docs/protocol.md; `SocketIO` is socket.io v5 over engine.io v4 on a bare
websocket (no polling upgrade), which python-socketio and the Node.js server both speak.
The generator (bench/loadgen.py) only calls these methods, so every target is driven by
the same code, at the same rates, with the same timestamps in the same place.

Every chat message carries its send time (``t``, wall clock, seconds) in its data;
receivers on any load process subtract it from their own clock (same machine).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from bench.seats import Seat


class Kind(enum.Enum):
    OTHER = 0
    ACK = 1  # value: the message's ack id
    DELIVERY = 2  # value: the message's send time
    PONG = 3  # answer to our heartbeat
    SERVER_PING = 4  # the server's heartbeat: answer with ``Wire.pong_reply``
    ERROR = 5  # the server refused a frame (rate_limited, unavailable, ...)
    # the server shed a frame (``overloaded``): value the ack id; send it again, same id,
    # after ``Wire.retry_after`` seconds, as the SDK does (not stored, so no duplicate)
    SHED = 6
    RESUMED = 7  # the replay a resuming socket asked for is complete


class Opened(msgspec.Struct):
    """What a handshake leaves: frames that came with the last handshake message (they
    are the socket's first traffic) and the stream's epoch, for a resume."""

    rest: Sequence[str | bytes] = ()
    epoch: str | None = None


class Wire(Protocol):
    name: str
    pong_reply: str

    def url(
        self, seat: Seat, base: str | None = None, after: int = 0, epoch: str | None = None
    ) -> str:
        """The seat's socket address (on gateway ``base`` instead of its own if given);
        ``after`` > 0: resume after that sequence (``epoch``: the one it came from)."""
        ...

    async def handshake(self, ws: Any, seat: Seat, timeout: float) -> Opened:
        """Everything between the WebSocket opening and the socket being in its room."""
        ...

    def message(self, ack_id: int, sent_at: float, pad: str) -> str: ...

    def ping(self) -> str | None:
        """An application heartbeat frame, if the protocol has client-driven ones."""

    def parse(self, raw: str | bytes) -> tuple[Kind, float, int]:
        """The frame's kind, its value (see Kind) and its stream sequence (0: none)."""
        ...

    def retry_after(self, raw: str | bytes) -> float:
        """For a ``SHED`` frame: the seconds to wait before sending it again."""
        ...

    def split(self, raw: str | bytes) -> Sequence[str | bytes]:
        """The frames of one WebSocket message."""
        ...


# Only the fields the generator reads: msgspec skips the rest without building objects.
class _Data(msgspec.Struct):
    t: float = 0.0


class _Event(msgspec.Struct):
    data: _Data


class _Frame(msgspec.Struct):
    type: str
    id: str | None = None
    seq: int = 0
    event: _Event | None = None
    code: str | None = None
    retry_after: float = 0.0


class _Welcome(msgspec.Struct):
    type: str
    epoch: str | None = None


_welcome = msgspec.json.Decoder(_Welcome)


_frame = msgspec.json.Decoder(_Frame)
_encode = msgspec.json.Encoder()


class WedSync:
    name = "wedsync"
    pong_reply = ""

    def url(
        self, seat: Seat, base: str | None = None, after: int = 0, epoch: str | None = None
    ) -> str:
        # batch=1: frames queued at the server come as one message (newline-separated)
        url = seat.ws_url if base is None else seat.on(base).ws_url
        url += "?batch=1"
        if after > 0:
            url += f"&after_seq={after}" + (f"&epoch={epoch}" if epoch else "")
        return url

    async def handshake(self, ws: Any, seat: Seat, timeout: float) -> Opened:
        await ws.send(seat.auth_frame)  # the token never goes in the URL
        # with batch=1 the welcome may share its message with the first frames after it
        frames = self.split(await asyncio.wait_for(ws.recv(), timeout))
        try:
            welcome = _welcome.decode(frames[0])
        except msgspec.DecodeError:
            welcome = _Welcome(type="?")
        if welcome.type != "welcome":
            raise RuntimeError(f"expected welcome, got {str(frames[0])[:200]}")
        return Opened(rest=frames[1:], epoch=welcome.epoch)

    def message(self, ack_id: int, sent_at: float, pad: str) -> str:
        return _encode.encode(
            {
                "type": "message",
                "id": str(ack_id),
                "channel": "chat",
                "data": {"t": sent_at, "text": pad},
            }
        ).decode()

    def ping(self) -> str | None:
        return '{"type":"ping"}'

    def split(self, raw: str | bytes) -> Sequence[str | bytes]:
        if isinstance(raw, str):
            return raw.split("\n") if "\n" in raw else [raw]
        return raw.split(b"\n") if b"\n" in raw else [raw]

    def parse(self, raw: str | bytes) -> tuple[Kind, float, int]:
        try:
            frame = _frame.decode(raw)
        except msgspec.DecodeError:
            return Kind.OTHER, 0.0, 0
        if frame.type == "event" and frame.event is not None and frame.event.data.t:
            return Kind.DELIVERY, frame.event.data.t, frame.seq
        if frame.type == "ack" and frame.id is not None:
            return Kind.ACK, float(frame.id), frame.seq
        if frame.type == "pong":
            return Kind.PONG, 0.0, 0
        if frame.type == "resumed":
            return Kind.RESUMED, 0.0, 0
        if frame.type == "error":
            if frame.code == "overloaded" and frame.id is not None:
                return Kind.SHED, float(frame.id), 0
            return Kind.ERROR, 0.0, 0
        return Kind.OTHER, 0.0, 0

    def retry_after(self, raw: str | bytes) -> float:
        return _frame.decode(raw).retry_after


class SocketIO:
    """engine.io packet types: 0 open, 2 ping, 3 pong, 4 message; socket.io packet types
    inside a message: 0 connect, 2 event, 3 ack. ``42<id>[...]`` is an event asking for
    the ack ``43<id>[...]``. Room names are the seats' ``wedding`` field."""

    name = "socketio"
    pong_reply = "3"

    def url(
        self, seat: Seat, base: str | None = None, after: int = 0, epoch: str | None = None
    ) -> str:
        # socket.io keeps no history: nothing to resume, a reconnect just joins again
        url = seat.url if base is None else base
        return url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"

    async def handshake(self, ws: Any, seat: Seat, timeout: float) -> Opened:
        async with asyncio.timeout(timeout):
            opened = await ws.recv()
            if not opened.startswith("0"):
                raise RuntimeError(f"expected engine.io open, got {opened[:200]}")
            await ws.send("40")
            while not (await ws.recv()).startswith("40"):
                pass
            # ack id 0 is the join's; messages use 1 and up
            await ws.send("420" + json.dumps(["join", seat.wedding]))
            while True:
                raw = await ws.recv()
                if raw == "2":
                    await ws.send("3")
                elif raw.startswith("430"):
                    return Opened()

    def message(self, ack_id: int, sent_at: float, pad: str) -> str:
        return f"42{ack_id}" + _encode.encode(["msg", {"t": sent_at, "text": pad}]).decode()

    def ping(self) -> str | None:
        return None  # engine.io heartbeats are the server's ("2"), answered in parse's caller

    def split(self, raw: str | bytes) -> Sequence[str | bytes]:
        return [raw]  # engine.io over a websocket: one packet per message

    def retry_after(self, raw: str | bytes) -> float:
        return 0.0  # socket.io servers do not shed

    def parse(self, raw: str | bytes) -> tuple[Kind, float, int]:
        if isinstance(raw, bytes):
            return Kind.OTHER, 0.0, 0
        if raw.startswith('42["msg"'):
            _, data = msgspec.json.decode(raw[2:])
            return Kind.DELIVERY, float(data["t"]), 0
        if raw.startswith("43"):
            return Kind.ACK, float(raw[2 : raw.index("[")]), 0
        if raw == "2":
            return Kind.SERVER_PING, 0.0, 0
        return Kind.OTHER, 0.0, 0


WIRES: dict[str, Wire] = {"wedsync": WedSync(), "socketio": SocketIO()}
