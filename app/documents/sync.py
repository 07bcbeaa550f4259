"""The y-protocols binary messages (y-websocket's wire format), as the server reads and
writes them: ``messageSync`` (0: step 1, step 2, update), ``messageAwareness`` (1) and
``messageQueryAwareness`` (3). pycrdt writes the sync messages; this module reads them and
reads and writes awareness updates, which the server relays without a document of its own.

An awareness update is ``varuint n`` then, per client, ``varuint clientID``, ``varuint
clock``, ``varstring state`` (JSON; ``null`` means the client is gone).
"""

from __future__ import annotations

from dataclasses import dataclass

from pycrdt import YMessageType, YSyncMessageType, write_var_uint

MESSAGE_SYNC = int(YMessageType.SYNC)
MESSAGE_AWARENESS = int(YMessageType.AWARENESS)
MESSAGE_QUERY_AWARENESS = 3
STEP1 = int(YSyncMessageType.SYNC_STEP1)
STEP2 = int(YSyncMessageType.SYNC_STEP2)
UPDATE = int(YSyncMessageType.SYNC_UPDATE)

#: a Yjs update that changes nothing (no structs, empty delete set): not stored
EMPTY_UPDATE = b"\x00\x00"
#: most clients one awareness message may describe (the server keeps each one's state)
MAX_AWARENESS_CLIENTS = 64


class ProtocolError(ValueError):
    """A message that is not y-protocols: the socket is closed (1007)."""


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def uint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ProtocolError("truncated or overlong varuint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def bytes(self) -> bytes:
        n = self.uint()
        if self.pos + n > len(self.data):
            raise ProtocolError("truncated message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        try:
            return self.bytes().decode()
        except UnicodeDecodeError:
            raise ProtocolError("not UTF-8") from None


@dataclass(frozen=True, slots=True)
class Message:
    kind: int  # MESSAGE_SYNC, MESSAGE_AWARENESS, MESSAGE_QUERY_AWARENESS or another
    step: int  # of a sync message: STEP1, STEP2 or UPDATE (else -1)
    payload: bytes  # the state vector, the update or the awareness update


def parse(data: bytes) -> Message:
    r = Reader(data)
    kind = r.uint()
    if kind == MESSAGE_SYNC:
        step = r.uint()
        if step not in (STEP1, STEP2, UPDATE):
            raise ProtocolError(f"unknown sync message {step}")
        return Message(kind, step, r.bytes())
    if kind == MESSAGE_AWARENESS:
        return Message(kind, -1, r.bytes())
    return Message(kind, -1, b"")


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: str  # JSON text; "null": gone

    @property
    def gone(self) -> bool:
        return self.state == "null"


def read_awareness(update: bytes) -> list[AwarenessEntry]:
    r = Reader(update)
    n = r.uint()
    if n > MAX_AWARENESS_CLIENTS:
        raise ProtocolError("too many clients in one awareness update")
    out = [AwarenessEntry(r.uint(), r.uint(), r.string()) for _ in range(n)]
    if r.pos != len(update):
        raise ProtocolError("trailing bytes after the awareness update")
    return out


def awareness_update(entries: list[AwarenessEntry]) -> bytes:
    """The awareness update of these clients' states."""
    # (not pycrdt's Encoder.write_var_string: it writes the length in characters, not bytes)
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        state = entry.state.encode()
        parts += [
            write_var_uint(entry.client_id),
            write_var_uint(entry.clock),
            write_var_uint(len(state)),
            state,
        ]
    return b"".join(parts)


def awareness_message(entries: list[AwarenessEntry]) -> bytes:
    """``messageAwareness`` carrying these clients' states."""
    body = awareness_update(entries)
    return write_var_uint(MESSAGE_AWARENESS) + write_var_uint(len(body)) + body
