"""The gateway hub of one process: rooms per wedding, one ordered JetStream consumer per room.

Every event of a wedding reaches this process once (an ordered consumer on
``wedsync.wedding.<id>.>``, delivering only new events, without a timer per room:
app/gateway/feeds.py), is turned into its ``event`` frame once, and is
offered to each local socket of that wedding. Control messages on
``wedsync.control.>`` (sessions ended, roles and statuses changed) reach every process at
once.
Presence is scoped per room (app/gateway/roster.py): a process reads and follows only the
presence records of the weddings it has sockets in; changes are batched per room and
encoded once per viewer role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import assert_never

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from app.gateway import signals
from app.gateway.admission import Admission
from app.gateway.connection import Connection
from app.gateway.diffs import DiffBatcher, diff_frame
from app.gateway.feeds import Feed, Feeds
from app.gateway.limits import ReplayBudgets
from app.gateway.roster import Gateways, Roster
from app.gateway.session import Extender
from app.gateway.tracker import PresenceTracker
from config.settings import Settings
from runtime import tasks
from runtime.crypto import ContactCipher
from runtime.eventlog import last_seq, stream_epoch
from runtime.guest_contacts import GuestContacts
from runtime.presence import Change, Kind, PresenceTable, presence_bucket, read_table, record_key
from streams.definitions import EVENTS
from streams.notifications import NotificationFrame
from streams.permissions import Channel
from streams.presence import Record, can_see, sees_editing
from streams.protocol import (
    Close,
    ControlMessage,
    Disconnect,
    EditingConflictFrame,
    EditingPeer,
    NotificationSent,
    RoleChanged,
    SessionsEnded,
    StatusChanged,
    event_frame,
)
from streams.subjects import CONTROL_ROOT, signal_subject, wedding_wildcard

_encode = msgspec.json.Encoder()
_decode_control = msgspec.json.Decoder(ControlMessage)

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)
# stored in JetStream -> handed to this process's sockets of the room: sampled, at most one
# event per LATENCY_SAMPLE_EVERY seconds per process (a record costs 10-60 µs of CPU,
# measured; the counters, not this histogram, count the events)
LATENCY_SAMPLE_EVERY = 0.005
DELIVERY_LATENCY = meter.create_histogram(
    "wedsync.event.delivery.latency",
    unit="s",
    description="From an event's storage in JetStream to its fan-out to a room's sockets",
)


@dataclass(slots=True)
class Tally:
    """Counts kept as plain ints on hot paths, read by observable counters."""

    frames_in: int = 0
    frames_out: int = 0
    published: int = 0  # events and changes stored in JetStream by this process's sockets
    deliveries: int = 0  # event frames offered to sockets
    sampled_at: float = 0.0  # when an event's latency was last recorded


def _observe(hub: Hub) -> None:
    def counter(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda _: [Observation(getattr(hub.tally, field))]

    meter.create_observable_counter(
        "wedsync.ws.frames.in",
        [counter("frames_in")],
        unit="{frame}",
        description="WebSocket frames received",
    )
    meter.create_observable_counter(
        "wedsync.ws.frames.out",
        [counter("frames_out")],
        unit="{frame}",
        description="WebSocket frames sent",
    )
    meter.create_observable_counter(
        "wedsync.events.published",
        [counter("published")],
        unit="{event}",
        description="Events and changes from this process's sockets stored in JetStream",
    )
    meter.create_observable_counter(
        "wedsync.events.delivered",
        [counter("deliveries")],
        unit="{frame}",
        description="Event frames queued to sockets",
    )
    meter.create_observable_gauge(
        "wedsync.ws.connections",
        [lambda _: [Observation(hub.connection_count)]],
        unit="{connection}",
        description="Open WebSocket connections of this process",
    )
    meter.create_observable_gauge(
        "wedsync.rooms",
        [lambda _: [Observation(len(hub.rooms))]],
        unit="{room}",
        description="Weddings with sockets in this process",
    )
    meter.create_observable_counter(
        "wedsync.ws.frames.refused",
        [lambda _: [Observation(hub.admission.refused)]],
        unit="{frame}",
        description="Frames refused as overloaded (admission control)",
    )
    meter.create_observable_gauge(
        "wedsync.eventloop.lag",
        [lambda _: [Observation(hub.admission.lag)]],
        unit="s",
        description="How late this process's event loop ran a timer (last sample)",
    )
    meter.create_observable_gauge(
        "wedsync.presence.entries",
        [lambda _: [Observation(len(hub.table))]],
        unit="{connection}",
        description="Presence records of the weddings with sockets in this process",
    )


GUESTS = Channel.GUESTS.value
#: rooms a process opens at the same time (more wait their turn)
OPEN_AT_ONCE = 8
#: seconds past its due time before a record still shown is checked against the bucket
#: (the owning gateway and the expiry worker remove it well before)
GHOST_AFTER = 10.0
#: a key checked is not checked again for this long (the bucket may really still hold it)
GHOST_RECHECK = 30.0


async def _on_signal(room: Room, msg: Msg) -> None:
    signals.deliver(room.connections, msg)


class Room:
    def __init__(
        self,
        wedding_id: uuid.UUID,
        batch_window: float,
        tally: Tally,
        contacts: GuestContacts | None = None,
    ) -> None:
        self.wedding_id = wedding_id
        self.tally = tally
        self.contacts = contacts
        self.connections: set[Connection] = set()
        self.sub: Feed | None = None  # its events (app/gateway/feeds.py)
        self.roster: Roster | None = None  # its presence records (app/gateway/roster.py)
        self.signals: Subscription | None = None  # core NATS: typing... (app/gateway/signals.py)
        self.presence = DiffBatcher(batch_window, self.on_presence)
        # the wedding's newest event seq: looked up once when the room opens, then
        # advanced by the room's own subscription (so a welcome costs no NATS request)
        self.head = 0

    def on_presence(self, changes: list[Change]) -> None:
        """A batch of presence changes: one encoding per (viewer role, own connection)."""
        frames: dict[tuple[str, str], str | None] = {}
        for conn in list(self.connections):
            if not conn.welcomed:
                continue  # its welcome snapshot will include these
            key = (conn.role.value, str(conn.session_id))
            if key not in frames:
                frame = diff_frame(changes, conn.role, str(conn.session_id))
                frames[key] = None if frame is None else _encode.encode(frame).decode()
            text = frames[key]
            if text is not None:
                conn.send(text)

    def local(self, connection_id: str) -> list[Connection]:
        return [c for c in self.connections if str(c.session_id) == connection_id]

    def on_event(self, msg: Msg, meta: Msg.Metadata) -> None:
        seq = meta.sequence.stream
        self.head = max(self.head, seq)
        channel = msg.subject.rsplit(".", 1)[1]
        data = msg.data
        if channel == GUESTS and self.contacts is not None:  # the only events decoded
            data = self.contacts.open_event_bytes(data)
        frame = event_frame(seq, data)  # encoded once for every local receiver
        for conn in list(self.connections):
            conn.offer_event(seq, channel, frame, data)
        tally = self.tally
        tally.deliveries += len(self.connections)
        now = time.time()
        if now - tally.sampled_at >= LATENCY_SAMPLE_EVERY:
            tally.sampled_at = now
            DELIVERY_LATENCY.record(max(now - meta.timestamp.timestamp(), 0.0))


class Hub:
    def __init__(
        self, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool, settings: Settings
    ) -> None:
        self.nc = nc
        self.js = js
        self.pool = pool  # the archive: a wedding's head once JetStream holds none of it
        self.settings = settings
        self.max_per_user = settings.gateway.max_per_user
        self.rooms: dict[uuid.UUID, Room] = {}
        self.epoch = ""
        self._per_user: dict[tuple[uuid.UUID, str], int] = {}
        # rooms being opened: one task per wedding, awaited by every socket joining it
        # meanwhile (no process-wide lock: a reconnect storm opens its rooms concurrently)
        self._opening: dict[uuid.UUID, asyncio.Task[Room]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # rooms dropped from a callback
        # but a bounded number at once: each open is a consumer and ~8 NATS requests
        self._open_slots = asyncio.Semaphore(OPEN_AT_ONCE)
        self._control: Subscription | None = None
        self._stack = contextlib.AsyncExitStack()
        self.table = PresenceTable()  # presence of the weddings with rooms here only
        self._kv: KeyValue | None = None
        self._gateways: Gateways | None = None
        self._checked: dict[str, float] = {}  # presence key -> when last checked (ghosts)
        self._tracker: PresenceTracker | None = None
        self._feeds: Feeds | None = None
        self.tally = Tally()
        g = settings.gateway
        self.admission = Admission(g.max_lag, g.max_inflight)
        self.sessions = Extender(pool, settings.auth.session_ttl)  # sockets' session use
        key = settings.auth.data_key
        self.contacts = GuestContacts(ContactCipher(key)) if key else None
        self.replays = ReplayBudgets(g.resume_rate, g.resume_burst)
        _observe(self)

    async def __aenter__(self) -> Hub:
        self.epoch = await stream_epoch(self.js)
        self._kv = kv = await presence_bucket(self.js, replicas=self.settings.nats.replicas)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.admission)
            self._feeds = await stack.enter_async_context(Feeds(self.nc, self.js, EVENTS.name))
            await stack.enter_async_context(self.sessions)
            self._gateways = await stack.enter_async_context(Gateways(self.nc))
            self._tracker = await stack.enter_async_context(
                PresenceTracker(self.js, kv, self.table, self.settings.presence)
            )
            ghosts = asyncio.create_task(self._ghost_checks(), name="presence ghost checks")
            stack.push_async_callback(tasks.stop, ghosts)
            self._control = await self.nc.subscribe(f"{CONTROL_ROOT}.*", cb=self._on_control)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for opening in list(self._opening.values()):
            opening.cancel()
        for room in list(self.rooms.values()):
            for conn in list(room.connections):
                conn.request_close(Close.GOING_AWAY, "server restarting")
            room.presence.cancel()
            await self._drop(room)
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control.unsubscribe()
        await self._stack.aclose()  # presence: records marked disconnected, heartbeat gone

    @property
    def tracker(self) -> PresenceTracker:
        assert self._tracker is not None, "Hub not entered"
        return self._tracker

    def head(self, wedding_id: uuid.UUID) -> int:
        """The newest event seq of a wedding with local sockets (joined rooms only)."""
        return self.rooms[wedding_id].head

    @property
    def feeds(self) -> Feeds:
        assert self._feeds is not None, "Hub not entered"
        return self._feeds

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "Hub not entered"
        return self._kv

    def presence_of(self, wedding_id: uuid.UUID) -> list[Record]:
        """The presence records of a wedding with a room in this process."""
        return self.table.room(str(wedding_id))

    async def presence_now(self, wedding_id: uuid.UUID) -> list[Record]:
        """A wedding's presence records, read from the bucket if no room has them here."""
        if wedding_id in self.rooms:
            return self.presence_of(wedding_id)
        w = str(wedding_id)
        return (await read_table(self.kv, f"{w}.*", self.js)).room(w)

    async def presence_everywhere(self) -> PresenceTable:
        """Every wedding's presence and every gateway's heartbeat (one pass, for admin)."""
        return await read_table(self.kv)

    def _on_presence(self, change: Change) -> None:
        room = self.rooms.get(uuid.UUID(change.record.wedding_id))
        if room is None:
            return
        room.presence.add(change)
        r = change.record
        if change.kind is Kind.LEAVE or r.editing is None:
            return
        if change.previous is not None and change.previous.editing == r.editing:
            return
        editing = r.editing
        others = [
            o
            for o in self.presence_of(room.wedding_id)
            if o.editing == editing and o.user_id != r.user_id
        ]
        if not others:
            return

        def tell(conn: Connection, peers: list[Record]) -> None:
            """Only peers the viewer may see, about a field it may read (docs/presence.md)."""
            shown = [
                EditingPeer(x.user_id, x.display_name, x.connection_id)
                for x in peers
                if can_see(conn.role, x.role)
            ]
            if shown and sees_editing(conn.role, editing):
                conn.send(_encode.encode(EditingConflictFrame(editing, shown)).decode())

        for conn in room.local(r.connection_id):
            tell(conn, others)
        for o in others:
            for conn in room.local(o.connection_id):
                tell(conn, [r])

    @property
    def connection_count(self) -> int:
        return sum(len(r.connections) for r in self.rooms.values())

    async def join(self, conn: Connection) -> bool:
        """Add a socket; the room's subscription exists when this returns.

        False (and nothing added) when the user already has ``max_per_user`` sockets on
        this wedding in this process.
        """
        key = (conn.wedding_id, conn.user_id)
        while True:
            # between awaits nothing else runs: the check and the add below are one step
            if self._per_user.get(key, 0) >= self.max_per_user:
                return False
            room = self.rooms.get(conn.wedding_id)
            if room is not None:
                room.connections.add(conn)
                self._per_user[key] = self._per_user.get(key, 0) + 1
                return True
            opening = self._opening.get(conn.wedding_id)
            if opening is None:
                opening = asyncio.create_task(self._open(conn.wedding_id))
                self._opening[conn.wedding_id] = opening
            try:
                # shielded: a socket that gives up does not cancel the others' room
                await asyncio.shield(opening)
            except asyncio.CancelledError:
                opening.add_done_callback(self._close_if_empty)
                raise
            # open now, unless its sockets all left meanwhile: then it is opened again

    async def _open(self, wedding_id: uuid.UUID) -> Room:
        try:
            async with self._open_slots:
                return await self._opened(wedding_id)
        finally:
            del self._opening[wedding_id]

    async def _opened(self, wedding_id: uuid.UUID) -> Room:
        room = Room(wedding_id, self.settings.presence.batch, self.tally, self.contacts)
        room.sub = await self.feeds.open(wedding_wildcard(wedding_id), room.on_event)
        # after subscribing: older events are in the lookup, newer reach on_event
        try:
            room.roster = Roster(
                self.nc, self.js, self.kv, self.table, str(wedding_id), self._on_presence
            )
            await room.roster.open()
            room.signals = await self.nc.subscribe(
                signal_subject(wedding_id), cb=partial(_on_signal, room)
            )
            room.head = max(room.head, await last_seq(self.js, self.pool, wedding_id))
            room.sub.covered(room.head)
        except BaseException:
            await self._drop(room)
            raise
        self.rooms[wedding_id] = room
        return room

    def _close_if_empty(self, opening: asyncio.Task[Room]) -> None:
        """A room opened for sockets that all gave up while it opened: closed again."""
        if opening.cancelled() or opening.exception() is not None:
            return
        room = opening.result()
        if not room.connections and self.rooms.get(room.wedding_id) is room:
            del self.rooms[room.wedding_id]
            room.presence.cancel()
            task = asyncio.get_running_loop().create_task(self._drop(room))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def leave(self, conn: Connection) -> None:
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
            room.presence.cancel()
            await self._drop(room)

    async def resubscribe(self) -> None:
        """After NATS came back: every room's consumer again, from the event after the last
        one it delivered (sockets drop what they have already, by seq: nothing arrives twice
        and nothing is skipped), and what presence changed while the connection was down."""
        self.feeds.restart_all()  # each re-created in its own time (backing off)
        delay = 0.25
        pending = list(self.rooms.values())
        while pending:
            room = pending.pop(0)
            if room.roster is None or self.rooms.get(room.wedding_id) is not room:
                continue  # closed meanwhile
            try:
                await room.roster.reload()
            except Exception as exc:  # JetStream not ready yet after the restart
                log.info("room %s presence not reloaded yet: %r", room.wedding_id, exc)
                pending.insert(0, room)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.25

    async def _drop(self, room: Room) -> None:
        if room.roster is not None:
            await room.roster.close()
            room.roster = None
        if room.sub is not None:
            await self.feeds.close(room.sub)
            room.sub = None
        if room.signals is not None:
            with contextlib.suppress(Exception):
                await room.signals.unsubscribe()
            room.signals = None

    async def _ghost_checks(self) -> None:
        """Records still shown past their due time are checked against the bucket."""
        p = self.settings.presence
        every = max(1.0, min(p.grace, p.ttl) / 2)
        while True:
            await asyncio.sleep(every)
            try:
                await self._check_ghosts()
            except Exception as exc:  # NATS away: the next round
                log.info("presence ghost check failed: %r", exc)

    async def _check_ghosts(self) -> None:
        p, gateways = self.settings.presence, self._gateways
        assert gateways is not None and self._tracker is not None
        now, wall, own = time.monotonic(), time.time(), self._tracker.gateway
        self._checked = {k: t for k, t in self._checked.items() if now - t < GHOST_RECHECK}
        for room in list(self.rooms.values()):
            if room.roster is None:
                continue
            for r in room.roster.records():
                if r.disconnected_at is not None:
                    due = wall - r.disconnected_at > p.grace + GHOST_AFTER
                else:
                    due = r.gateway != own and gateways.quiet_for(r.gateway) > p.ttl + GHOST_AFTER
                key = record_key(r.wedding_id, r.connection_id)
                if due and key not in self._checked:
                    self._checked[key] = now
                    await room.roster.verify(key)

    async def _on_control(self, msg: Msg) -> None:
        try:
            wedding_id = uuid.UUID(msg.subject.rsplit(".", 1)[1])
            ctl = _decode_control.decode(msg.data)
        except (ValueError, msgspec.DecodeError):
            log.warning("ignored malformed control message on %s", msg.subject)
            return
        room = self.rooms.get(wedding_id)
        if room is None:
            return
        conns = list(room.connections)
        match ctl:
            case SessionsEnded(session_ids=ids):
                ended = set(ids)
                for conn in conns:
                    if str(conn.session_id) in ended:
                        conn.request_close(Close.SESSION_ENDED, "session ended")
            case StatusChanged(status=status):
                for conn in conns:
                    conn.change_status(status)
            case NotificationSent(user_id=user_id, notification=note):
                frame = _encode.encode(NotificationFrame(note)).decode()
                for conn in conns:
                    if conn.user_id == user_id:
                        conn.send(frame)
            case RoleChanged(user_id=user_id, role=role):
                for conn in conns:
                    if conn.user_id != user_id:
                        continue
                    if role is None:
                        conn.request_close(Close.FORBIDDEN, "no longer a member")
                    else:
                        conn.change_role(role)
            case Disconnect(user_id=user_id, code=code, reason=reason):  # the admin API
                for conn in conns:
                    if conn.user_id == user_id:
                        conn.request_close(code, reason or "disconnected by an operator")
            case _:
                assert_never(ctl)
