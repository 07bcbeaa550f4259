"""``WeddingClient``: one wedding room over WebSocket, kept alive across network trouble.

- States: ``connecting`` → ``open`` → (``reconnecting`` → ``open``)* → ``closed``.
- Reconnects with exponential backoff and full jitter; a terminal close code (4500-4999)
  or a refused handshake (HTTP 4xx) ends the client instead.
- Resumes automatically from the last seq it delivered, so events arrive once and in
  order whatever happened to the network; a ``resumed`` frame with ``recovered: false``
  tells the application to reload state over HTTP.
- ``send()`` returns the JetStream seq once the server acknowledged the message. Sends not
  yet acknowledged when the connection drops are re-sent with the same id after the
  reconnect: the server stores them once.
- A frame refused as not stored (``unavailable``, ``overloaded``, ``rate_limited``) shuts
  the retry gate (client/retry.py): sends are held, one probe goes out after a full-jitter
  wait, its ack releases the rest. An outage costs about one frame per wait, not a storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from client.backoff import Backoff
from client.retry import RETRYABLE, RetryGate
from streams.notifications import Notification, NotificationFrame
from streams.permissions import Channel
from streams.protocol import (
    SUBPROTOCOL,
    TOKEN_PREFIX,
    AckFrame,
    ChangeFrame,
    ErrorFrame,
    EventFrame,
    MessageFrame,
    PermissionsFrame,
    PongFrame,
    ResumedFrame,
    ServerFrame,
    WelcomeFrame,
)
from streams.state import EntityKind, Op

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(ServerFrame)
_encode = msgspec.json.Encoder()

#: a probe unanswered this long on an open connection counts as refused (the gateway
#: answers every frame within its JetStream publish timeout, a few seconds)
PROBE_TIMEOUT = 15.0


class State(enum.StrEnum):
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ServerError(Exception):
    """The server refused a message (``forbidden``, ``invalid``, ``too_large``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ClientClosed(Exception):
    """The client stopped for good: closed by us, or refused by the server (``code``)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed ({code}): {reason}" if code else f"closed: {reason}")
        self.code, self.reason = code, reason


def is_terminal(code: int | None) -> bool:
    """4500-4999: the server says do not reconnect (1008: policy violation, likewise)."""
    return code is not None and (4500 <= code <= 4999 or code == 1008)


class WeddingClient:
    """``async with WeddingClient(url, wedding_id, token) as c:`` then ``send``/``events``."""

    def __init__(
        self,
        base_url: str,
        wedding_id: str,
        token: str,
        *,
        after_seq: int | None = None,
        epoch: str | None = None,
        backoff: Backoff | None = None,
        buffer: int = 10_000,
        ping_interval: float | None = 20.0,
        retry_backoff: Backoff | None = None,
        on_state: Callable[[State], None] | None = None,
        on_notification: Callable[[Notification], None] | None = None,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        root = base_url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
        self._url = f"{root}/ws/weddings/{wedding_id}"
        # the session token travels in the Sec-WebSocket-Protocol header, not the URL
        self._subprotocols = [Subprotocol(SUBPROTOCOL), Subprotocol(TOKEN_PREFIX + token)]
        self.last_seq = after_seq  # highest event seq delivered (or the welcome's head)
        self.epoch = epoch
        self._resume = after_seq is not None
        self._backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        # the waits of the retry gate: ~1 frame per 10 s at most during a long outage
        self._gate = RetryGate(retry_backoff or Backoff(base=0.5, cap=10.0))
        self._gate_changed = asyncio.Event()
        self._resender: asyncio.Task[None] | None = None
        self._on_state = on_state
        self._on_notification = on_notification
        self._options = connect_options or {}
        self.state = State.CONNECTING
        self.welcome: WelcomeFrame | None = None
        self.connects = 0  # successful connections so far (1 + reconnects)
        self._events: asyncio.Queue[EventFrame | ResumedFrame | None] = asyncio.Queue(buffer)
        self._pending: dict[str, tuple[str, asyncio.Future[int]]] = {}  # in send order
        self._ws: ClientConnection | None = None
        self._opened = asyncio.Event()
        self._ended = False
        self._error: ClientClosed | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> WeddingClient:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; returns after the first welcome, raises ClientClosed if refused."""
        self._task = asyncio.create_task(self._run())
        opened = asyncio.ensure_future(self._opened.wait())
        await asyncio.wait({opened, self._task}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._resender is not None:
            self._resender.cancel()
        self._finish(ClientClosed(None, "closed by the client"))

    async def disconnect(self) -> None:
        """Drop the current connection as a network failure would (it reconnects)."""
        if self._ws is not None:
            self._ws.transport.abort()

    # -- using it ----------------------------------------------------------------------

    @property
    def unacknowledged(self) -> int:
        """Messages sent (or waiting to be) that the server has not acknowledged yet."""
        return len(self._pending)

    async def send(
        self, channel: Channel | str, data: dict[str, Any], id: str | None = None
    ) -> int:
        """Send a message; returns its seq once durable. Raises ServerError if refused."""
        client_id = id or uuid.uuid4().hex
        return await self._request(
            client_id, MessageFrame(id=client_id, channel=Channel(channel), data=data)
        )

    async def change(
        self,
        entity: str,
        entity_id: str,
        op: str,
        fields: dict[str, Any] | None = None,
        base_version: int | None = None,
        id: str | None = None,
    ) -> int:
        """Send a state change (docs/conflicts.md); returns its seq on the changes stream
        once stored there (the outcome arrives as events). Re-sent like messages."""
        client_id = id or uuid.uuid4().hex
        frame = ChangeFrame(
            id=client_id,
            entity=EntityKind(entity),
            entity_id=entity_id,
            op=Op(op),
            fields=fields or {},
            base_version=base_version,
        )
        return await self._request(client_id, frame)

    async def _request(self, client_id: str, frame: MessageFrame | ChangeFrame) -> int:
        if self._error is not None:
            raise self._error
        if client_id in self._pending:
            return await asyncio.shield(self._pending[client_id][1])
        text = _encode.encode(frame).decode()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[client_id] = (text, fut)
        if self._gate.shut:
            self._gate.hold(client_id)  # goes out once a probe is stored
        elif self.state is State.OPEN:
            await self._transmit(text)
        return await fut

    async def events(self) -> AsyncIterator[EventFrame | ResumedFrame]:
        """Events in seq order, each once; ``resumed`` frames mark each catch-up's end."""
        while not (self._ended and self._events.empty()):
            item = await self._events.get()
            if item is None:
                break
            yield item
        if self._error is not None and not self._closing:
            raise self._error

    async def next_event(self, timeout: float = 10.0) -> EventFrame:
        """The next ``event`` (skipping ``resumed`` markers), or TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._events.get()
                if item is None:
                    raise self._error or ClientClosed(None, "closed")
                if isinstance(item, EventFrame):
                    return item

    # -- the connection loop -----------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def _address(self) -> str:
        # never the token: URLs end up in logs (it goes in Sec-WebSocket-Protocol instead)
        query: dict[str, str] = {"batch": "1"}  # see _frames
        if self._resume and self.last_seq is not None:
            query["after_seq"] = str(self.last_seq)
            if self.epoch:
                query["epoch"] = self.epoch
        return f"{self._url}?{urlencode(query)}"

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                code: int | None = None
                reason = ""
                try:
                    async with connect(
                        self._address(),
                        subprotocols=self._subprotocols,
                        compression=None,
                        ping_interval=self._ping_interval,
                        ping_timeout=self._ping_interval,
                        max_size=2**24,
                        **self._options,
                    ) as ws:
                        self._ws = ws
                        try:
                            async for raw in ws:
                                for frame in _frames(raw):
                                    if await self._handle(frame):
                                        attempt = 0
                        except ConnectionClosed:
                            pass
                        code, reason = ws.close_code, ws.close_reason or ""
                except InvalidStatus as exc:
                    code, reason = exc.response.status_code, "handshake refused"
                    if 400 <= code < 500 and code != 429:
                        self._finish(ClientClosed(code, reason))
                        return
                except (OSError, InvalidHandshake, TimeoutError) as exc:
                    reason = repr(exc)
                finally:
                    self._ws = None
                if self._closing:
                    return
                if is_terminal(code):
                    self._finish(ClientClosed(code, reason))
                    return
                self._set_state(State.RECONNECTING)
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.info("connection lost (%s %s); reconnecting in %.2fs", code, reason, delay)
                await asyncio.sleep(delay)
        finally:
            self._ws = None

    async def _handle(self, raw: str | bytes) -> bool:
        """Handle one server frame; True when it was the welcome (connection usable)."""
        try:
            frame = _decode.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            log.debug("ignored a frame this client does not know: %.200r", raw)
            return False
        if isinstance(frame, EventFrame):
            if self.last_seq is None or frame.seq > self.last_seq:
                self.last_seq = frame.seq
                await self._events.put(frame)
        elif isinstance(frame, AckFrame):
            entry = self._pending.pop(frame.id, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(frame.seq)
            released = self._gate.acked(frame.id)
            if released:
                self._gate_changed.set()
                for client_id in released:  # in send order, with their ids: stored once
                    if client_id in self._pending:
                        await self._transmit(self._pending[client_id][0])
        elif isinstance(frame, ErrorFrame):
            self._on_error(frame)
        elif isinstance(frame, ResumedFrame):
            if not frame.recovered:
                self.last_seq = frame.last_seq  # the app reloads state; live from here
            self.epoch = frame.epoch
            await self._events.put(frame)
        elif isinstance(frame, WelcomeFrame):
            self.welcome = frame
            if self.last_seq is None:
                self.last_seq = frame.last_seq
            if self.epoch is None:
                self.epoch = frame.epoch
            self._resume = True  # every later connection resumes where we are
            self.connects += 1
            self._set_state(State.OPEN)
            self._opened.set()
            held = self._gate.held  # they wait for the probe (sent again here if it was out)
            for client_id, (text, _) in list(self._pending.items()):  # same ids: stored once
                if client_id not in held:
                    await self._transmit(text)
            if self._gate.probe is not None:
                self._gate.probe_at = asyncio.get_running_loop().time()
            self._gate_changed.set()
            return True
        elif isinstance(frame, NotificationFrame):
            if self._on_notification is not None:
                self._on_notification(frame.notification)
        elif isinstance(frame, PermissionsFrame) and self.welcome is not None:
            # a role or status change: what the welcome said no longer holds
            self.welcome = msgspec.structs.replace(
                self.welcome, role=frame.role, permissions=frame.permissions
            )
        elif not isinstance(frame, PongFrame):  # pragma: no cover - exhaustive above
            log.debug("ignored frame %r", frame)
        return False

    def _on_error(self, frame: ErrorFrame) -> None:
        if frame.id is None or frame.id not in self._pending:
            log.warning("server error: %s %s", frame.code, frame.message)
            return
        if frame.code in RETRYABLE:  # not stored: the same id again, when the gate opens
            now = asyncio.get_running_loop().time()
            self._gate.refused(frame.id, frame.retry_after, now)
            self._gate_changed.set()
            if self._resender is None or self._resender.done():
                self._resender = asyncio.create_task(self._resend())
            return
        self._gate.settled(frame.id)
        self._gate_changed.set()
        _, fut = self._pending.pop(frame.id)
        if not fut.done():
            fut.set_exception(ServerError(frame.code, frame.message))

    async def _resend(self) -> None:
        """While the retry gate is shut: send the probe when its wait is over."""
        loop, gate = asyncio.get_running_loop(), self._gate
        while gate.shut and not self._ended:
            self._gate_changed.clear()
            now = loop.time()
            wait: float | None = None  # not connected: the welcome wakes us
            if self.state is State.OPEN:
                if gate.overdue(now, PROBE_TIMEOUT):
                    assert gate.probe is not None
                    gate.refused(gate.probe, None, now)  # lost: counts as refused
                if (client_id := gate.next_probe(now)) is not None:
                    if client_id in self._pending:
                        await self._transmit(self._pending[client_id][0])
                    else:  # answered meanwhile
                        gate.settled(client_id)
                    continue
                wait = (gate.probe_at + PROBE_TIMEOUT if gate.probe else gate.reopen_at) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gate_changed.wait(), wait)

    async def _transmit(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            return  # re-sent after the next welcome
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    def _finish(self, error: ClientClosed) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._set_state(State.CLOSED)
        self._gate.clear()
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)


def _frames(raw: str | bytes) -> list[str | bytes]:
    """The frames of one WebSocket message: with ``batch=1`` the server sends what it had
    queued as one message of newline-separated frames (JSON frames hold no raw newline)."""
    parts: list[str] | list[bytes]
    if isinstance(raw, str):
        parts = raw.split("\n") if "\n" in raw else [raw]
    else:
        parts = raw.split(b"\n") if b"\n" in raw else [raw]
    return list(parts)
