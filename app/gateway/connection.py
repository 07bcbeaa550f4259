"""One WebSocket's outgoing side: a bounded queue, ordered by seq, with a named overflow policy.

Overflow policy ``disconnect``: a socket whose queue is full is closed with the
reconnect-allowed code 4001 (it resumes from its last seq). It never blocks the room's
fan-out and never grows memory without bound.

Events of a channel the role may not read are dropped unread. A member with a record-level
scope (a vendor: their tasks and vendor record, streams/scope.py) has those channels'
record events decoded and filtered per socket; everyone else's frames are never decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from app.gateway.tracker import Presence
from streams.permissions import Role, WeddingStatus, permissions_for
from streams.protocol import Close, ErrorCode, ErrorFrame, PermissionsFrame, event_frame
from streams.scope import RecordScope

OVERFLOW_POLICY = "disconnect"
SLOW_CONSUMER = "slow consumer: resume from your last seq"  # the reason of a 4001 close
WAKE = ""  # queued by request_close for a writer waiting on an empty queue; never sent

_encode = msgspec.json.Encoder()


def frame_text(frame: msgspec.Struct) -> str:
    """A server frame as the text of a WebSocket message."""
    return _encode.encode(frame).decode()


class Lifecycle(Enum):
    """Where a socket is in its life. Live events are held (not sent) until it is ``LIVE``;
    presence diffs and ``permissions`` frames only after the welcome (its snapshot)."""

    OPENING = "opening"  # in its room, not welcomed yet (app/gateway/handshake.py)
    WELCOMED = "welcomed"  # welcomed; live events held until a replay is over (resume)
    REPLAYING = "replaying"  # a resume replays what the client missed: one at a time
    LIVE = "live"  # live events sent as they come
    CLOSED = "closed"  # a close was requested (terminal: nothing is queued any more)


@dataclass(eq=False)
class Connection:
    wedding_id: uuid.UUID
    session_id: uuid.UUID
    user_id: str
    role: Role
    status: WeddingStatus
    queue_size: int
    presence: Presence  # this socket's own presence record
    queue: asyncio.Queue[str] = field(init=False)
    last_sent: int = 0  # highest event seq queued to this socket
    state: Lifecycle = Lifecycle.OPENING
    held: list[tuple[int, str, str]] = field(default_factory=list)  # live events, until LIVE
    close_code: int = 1000
    close_reason: str = ""
    # the client asked for ``?batch=1``: frames already queued go out together, one
    # WebSocket message of newline-separated frames (docs/protocol.md, "Batched frames")
    batch: bool = False
    # the session: when it expires (epoch seconds, as the database last said) and when
    # this socket last extended it (monotonic); app/gateway/session.py
    expires_at: float = 0.0
    touched_at: float = 0.0
    # role and status changes applied from control messages (the handshake's re-read of
    # the membership must not overwrite one that arrived while it ran)
    changes: int = 0
    # called once when a close is requested (the endpoint stops the socket's reader)
    on_close: Callable[[], object] | None = None

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)
        self.readable = self._readable()
        self.scope, self.scoped = self._scope()

    @property
    def closed(self) -> bool:
        return self.state is Lifecycle.CLOSED

    @property
    def welcomed(self) -> bool:
        return self.state is not Lifecycle.OPENING and self.state is not Lifecycle.CLOSED

    def _enter(self, state: Lifecycle) -> None:
        if self.state is not Lifecycle.CLOSED:  # closed stays closed
            self.state = state

    def welcome_sent(self) -> None:
        self._enter(Lifecycle.WELCOMED)

    def start_replay(self) -> None:
        """A resume begins: live events are held from here (until :meth:`finish_replay`)."""
        self._enter(Lifecycle.REPLAYING)

    def replay_stopped(self) -> None:
        """The resume's replay is over (or failed): events stay held, another may begin."""
        if self.state is Lifecycle.REPLAYING:
            self.state = Lifecycle.WELCOMED

    def request_close(self, code: int, reason: str) -> None:
        """Ask the socket's writer to close with ``code`` (first request wins)."""
        if not self.closed:
            self.state = Lifecycle.CLOSED
            self.close_code, self.close_reason = code, reason
            if self.on_close is not None:
                self.on_close()
            # wake the writer if it waits on an empty queue (a full one: it is not waiting)
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(WAKE)

    def _readable(self) -> frozenset[str]:
        perms = permissions_for(self.role, self.status)
        return frozenset(ch for ch, a in perms.items() if a.read)

    def _scope(self) -> tuple[RecordScope | None, frozenset[str]]:
        """The record-level scope, and the channels it filters (empty: none)."""
        scope = RecordScope.of(self.role, self.user_id)
        return scope, frozenset() if scope is None else scope.channels

    def set_access(self, role: Role, status: WeddingStatus) -> None:
        """The role and status the handshake read (before the welcome: nothing to tell)."""
        self.role, self.status = role, status
        self.readable = self._readable()
        self.scope, self.scoped = self._scope()

    def change_role(self, role: Role) -> None:
        """A control message: the member's new role, told to the client at once."""
        self.role = role
        self._changed()

    def change_status(self, status: WeddingStatus) -> None:
        """A control message: the wedding's new status (cancelled: the socket closes)."""
        if status is WeddingStatus.CANCELLED:
            self.request_close(Close.FORBIDDEN, "this wedding was cancelled")
            return
        self.status = status
        self._changed()

    def _changed(self) -> None:
        self.readable = self._readable()
        self.scope, self.scoped = self._scope()
        self.changes += 1
        if self.welcomed:  # before it, the welcome carries them
            access = permissions_for(self.role, self.status)
            frame = PermissionsFrame(role=self.role, status=self.status, permissions=access)
            self.send(frame_text(frame))

    def can_write(self, channel: str) -> bool:
        return permissions_for(self.role, self.status)[channel].write

    def send(self, frame: str) -> None:
        """Queue a frame without waiting; overflow closes the socket (policy above)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.request_close(Close.SLOW_CONSUMER, SLOW_CONSUMER)

    def refuse(
        self,
        code: ErrorCode,
        message: str,
        frame_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer a refused frame with an error frame (the socket stays open): the one place
        an :class:`ErrorCode` becomes a frame. ``frame_id``: the refused frame's ``id``."""
        frame = ErrorFrame(code=code, message=message, id=frame_id, retry_after=retry_after)
        self.send(frame_text(frame))

    def offer_event(self, seq: int, channel: str, frame: str, stored: bytes) -> None:
        """A live event from the room (``frame``, built from the ``stored`` event): filtered,
        held while replaying, never sent twice."""
        if channel not in self.readable:
            return
        if channel in self.scoped:
            mine = self._scoped(seq, stored, frame)
            if mine is None:
                return
            frame = mine
        if self.state is not Lifecycle.LIVE:  # (closed: held, never sent)
            if len(self.held) >= self.queue_size:
                self.request_close(Close.SLOW_CONSUMER, SLOW_CONSUMER)
                return
            self.held.append((seq, channel, frame))
            return
        if seq > self.last_sent:
            self.last_sent = seq
            self.send(frame)

    async def replayed(self, seq: int, channel: str, stored: bytes) -> None:
        """A historical event during resume, filtered like a live one: waits for room in
        the queue (only we wait)."""
        if channel not in self.readable or seq <= self.last_sent or self.closed:
            return
        frame: str | None = event_frame(seq, stored)
        if channel in self.scoped:
            assert frame is not None
            frame = self._scoped(seq, stored, frame)
        if frame is None:
            return
        self.last_sent = seq
        await self.queue.put(frame)

    def _scoped(self, seq: int, stored: bytes, frame: str) -> str | None:
        """The frame as this member's record-level scope shows it (None: not at all)."""
        assert self.scope is not None
        return self.scope.frame(seq, stored, frame)

    def finish_replay(self) -> None:
        """Send the live events held during the replay (filtered when they were offered)."""
        held, self.held = self.held, []
        self._enter(Lifecycle.LIVE)
        for seq, channel, frame in held:
            if channel in self.readable and seq > self.last_sent:
                self.last_sent = seq
                self.send(frame)
