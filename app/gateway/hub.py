"""The gateway hub of one process: rooms per wedding, one JetStream subscription per room.

Every event of a wedding reaches this process once (an ordered JetStream consumer on
``wedsync.wedding.<id>.>``, delivering only new events), is turned into its ``event`` frame
once, and is offered to each local socket of that wedding. Control messages on
``wedsync.control.>`` (sessions ended, roles changed) reach every process at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from types import TracebackType

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from app.gateway.connection import Connection
from app.gateway.history import stream_epoch
from streams.definitions import EVENTS
from streams.protocol import Close, ControlMessage, event_frame
from streams.subjects import CONTROL_ROOT, wedding_wildcard

log = logging.getLogger(__name__)


class Room:
    def __init__(self, wedding_id: uuid.UUID) -> None:
        self.wedding_id = wedding_id
        self.connections: set[Connection] = set()
        self.sub: JetStreamContext.PushSubscription | None = None

    async def on_event(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        channel = msg.subject.rsplit(".", 1)[1]
        frame = event_frame(seq, msg.data)  # encoded once for every local receiver
        for conn in list(self.connections):
            conn.offer_event(seq, channel, frame)


class Hub:
    def __init__(self, nc: NATS, js: JetStreamContext, max_per_user: int = 8) -> None:
        self.nc = nc
        self.js = js
        self.max_per_user = max_per_user
        self.rooms: dict[uuid.UUID, Room] = {}
        self.epoch = ""
        self._per_user: dict[tuple[uuid.UUID, str], int] = {}
        self._lock = asyncio.Lock()
        self._control: Subscription | None = None

    async def __aenter__(self) -> Hub:
        self.epoch = await stream_epoch(self.js)
        self._control = await self.nc.subscribe(f"{CONTROL_ROOT}.*", cb=self._on_control)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for room in list(self.rooms.values()):
            for conn in list(room.connections):
                conn.request_close(Close.GOING_AWAY, "server restarting")
            await self._drop(room)
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control.unsubscribe()

    @property
    def connection_count(self) -> int:
        return sum(len(r.connections) for r in self.rooms.values())

    async def join(self, conn: Connection) -> bool:
        """Add a socket; the room's subscription exists when this returns.

        False (and nothing added) when the user already has ``max_per_user`` sockets on
        this wedding in this process.
        """
        key = (conn.wedding_id, conn.user_id)
        async with self._lock:
            if self._per_user.get(key, 0) >= self.max_per_user:
                return False
            room = self.rooms.get(conn.wedding_id)
            if room is None:
                room = Room(conn.wedding_id)
                room.sub = await self.js.subscribe(
                    wedding_wildcard(conn.wedding_id),
                    stream=EVENTS.name,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW,
                    cb=room.on_event,
                )
                self.rooms[conn.wedding_id] = room
            room.connections.add(conn)
            self._per_user[key] = self._per_user.get(key, 0) + 1
            return True

    async def leave(self, conn: Connection) -> None:
        async with self._lock:
            room = self.rooms.get(conn.wedding_id)
            if room is None or conn not in room.connections:
                return
            room.connections.discard(conn)
            key = (conn.wedding_id, conn.user_id)
            if self._per_user[key] <= 1:
                del self._per_user[key]
            else:
                self._per_user[key] -= 1
            if not room.connections:
                del self.rooms[conn.wedding_id]
                await self._drop(room)

    async def _drop(self, room: Room) -> None:
        if room.sub is not None:
            with contextlib.suppress(Exception):
                await room.sub.unsubscribe()
            room.sub = None

    async def _on_control(self, msg: Msg) -> None:
        try:
            wedding_id = uuid.UUID(msg.subject.rsplit(".", 1)[1])
            ctl = msgspec.json.decode(msg.data, type=ControlMessage)
        except (ValueError, msgspec.DecodeError):
            log.warning("ignored malformed control message on %s", msg.subject)
            return
        room = self.rooms.get(wedding_id)
        if room is None:
            return
        for conn in list(room.connections):
            if ctl.kind == "sessions_ended" and str(conn.session_id) in ctl.session_ids:
                conn.request_close(Close.SESSION_ENDED, "session ended")
            elif ctl.kind == "role_changed" and conn.user_id == ctl.user_id:
                if ctl.role is None:
                    conn.request_close(Close.FORBIDDEN, "no longer a member")
                else:
                    conn.change_role(ctl.role)
