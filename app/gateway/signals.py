"""Ephemeral signals of a wedding room: "typing..." in a channel, "looking at the seating
chart". Relayed live over core NATS (``wedsync.signal.<wedding_id>``, one subscription per
room per process, like the room's events), never written to JetStream or PostgreSQL, never
acked. A signal reaches the members who may read its channel and may see its sender's
presence (streams/presence.py ``can_see``), not the sending socket itself.
"""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from app.gateway.connection import Connection
from streams.permissions import Role
from streams.presence import can_see
from streams.protocol import ErrorCode, PeerSignalFrame, SignalFrame, SignalKind
from streams.subjects import signal_subject


class SignalRelay(msgspec.Struct, frozen=True):
    """A signal between gateway processes: the frame as receivers get it, and its sender's
    role (who may see it)."""

    role: Role
    frame: PeerSignalFrame


_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(SignalRelay)


def refused(conn: Connection, frame: SignalFrame) -> tuple[ErrorCode, str] | None:
    """Why this socket may not send this signal (None: it may)."""
    if frame.kind is SignalKind.TYPING and frame.channel is None:
        return ErrorCode.INVALID, "a typing signal names its channel"
    if frame.channel is None:
        return None
    if frame.kind is SignalKind.TYPING and not conn.can_write(frame.channel.value):
        return ErrorCode.FORBIDDEN, f"role {conn.role.value} may not write {frame.channel.value}"
    if frame.channel.value not in conn.readable:
        return ErrorCode.FORBIDDEN, f"role {conn.role.value} may not read {frame.channel.value}"
    return None


async def publish(nc: NATS, conn: Connection, frame: SignalFrame) -> None:
    peer = PeerSignalFrame(
        user_id=conn.user_id,
        display_name=conn.presence.display_name,
        connection_id=str(conn.session_id),
        kind=frame.kind,
        channel=frame.channel,
        target=frame.target,
        active=frame.active,
    )
    await nc.publish(signal_subject(conn.wedding_id), _encode.encode(SignalRelay(conn.role, peer)))


def deliver(connections: set[Connection], msg: Msg) -> None:
    """One signal to the room's sockets in this process: encoded once."""
    try:
        relay = _decode.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    peer = relay.frame
    text = _encode.encode(peer).decode()
    for conn in list(connections):
        if not conn.welcomed or str(conn.session_id) == peer.connection_id:
            continue
        if peer.channel is not None and peer.channel.value not in conn.readable:
            continue
        if can_see(conn.role, relay.role):
            conn.send(text)
