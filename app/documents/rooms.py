"""The live documents of one gateway process: a room per open document, holding the
document (pycrdt) as JetStream has it, the sockets editing it, and its live awareness.

A room opens with its first socket: the newest snapshot from PostgreSQL, then the stream's
tail after it, through an ordered JetStream consumer on ``wedsync.doc.<wedding>.<id>``
that stays open while the room does. Every process with the document open has such a
consumer, so an update is applied and relayed (to every socket but the one that sent it)
only once JetStream stored it, in every process alike. Awareness goes over core NATS
(``wedsync.awareness.<wedding>.<id>``): relayed, kept in memory for a socket opening later,
never stored. The room closes with its last socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Self

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pycrdt import Doc, create_update_message

from app.documents.sync import (
    AwarenessEntry,
    awareness_message,
    awareness_update,
    read_awareness,
)
from runtime.documents import store
from streams.definitions import DOCUMENTS
from streams.documents import (
    AwarenessRelay,
    DocumentUpdate,
    access_subject,
    awareness_decoder,
    awareness_subject,
    document_access,
    document_subject,
    update_decoder,
    update_encoder,
)
from streams.permissions import Role, WeddingStatus
from streams.presence import can_see
from streams.protocol import (
    Close,
    ControlMessage,
    Disconnect,
    RoleChanged,
    SessionsEnded,
    StatusChanged,
)
from streams.subjects import control_subject

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT = 10.0  # seconds a room opening may take to read its tail
SLOW_CONSUMER = "slow consumer: reconnect (the sync sends what you missed)"
_decode_control = msgspec.json.Decoder(ControlMessage)


class State(Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False)
class DocSocket:
    """One open document socket's outgoing side: a bounded queue (overflow policy
    ``disconnect``: closed with 4001, the client reconnects and syncs what it missed)."""

    session_id: uuid.UUID
    user_id: str
    role: Role
    status: WeddingStatus
    name: str
    queue_size: int
    writable: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: State = State.OPEN
    close_code: int = 1000
    close_reason: str = ""
    #: awareness client ids this socket announced (removed for everyone when it closes)
    clients: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self.close_requested = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def send(self, message: bytes) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.request_close(Close.SLOW_CONSUMER, SLOW_CONSUMER)

    def request_close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.state = State.CLOSED
            self.close_code, self.close_reason = code, reason
            self.close_requested.set()
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(b"")  # wakes a writer waiting on an empty queue

    def access(self, shared: bool) -> tuple[bool, bool]:
        a = document_access(self.role, self.status, self.user_id, self.name, shared)
        return a.read, a.write


#: seconds an awareness state lives without a renewal (y-protocols' ``outdatedTimeout``:
#: clients renew theirs every 15 s); a state of a socket whose process died goes with it
PEER_TTL = 30.0


@dataclass(slots=True)
class Peer:
    """The newest awareness state of one Yjs client in the room (any process)."""

    entry: AwarenessEntry
    role: Role
    origin: str  # the socket that announced it
    at: float = field(default_factory=time.monotonic)

    @property
    def stale(self) -> bool:
        return time.monotonic() - self.at > PEER_TTL


class DocRoom:
    def __init__(self, hub: DocumentHub, doc: store.DocumentRow) -> None:
        self.hub = hub
        self.row = doc
        self.id, self.wedding_id = doc.id, doc.wedding_id
        self.subject = document_subject(doc.wedding_id, doc.id)
        self.doc: Doc[Any] = Doc()
        self.applied = 0  # the stream seq of the newest update applied to ``doc``
        self.sockets: set[DocSocket] = set()
        self.peers: dict[int, Peer] = {}
        self._subs: list[Subscription] = []  # core NATS: awareness, control, sharing
        self._updates: JetStreamContext.PushSubscription | None = None
        self._caught_up = asyncio.Event()
        self._catch_up_to = 0

    async def open(self) -> None:
        """Load the snapshot and read the tail: the room holds everything stored so far."""
        async with self.hub.pool.acquire() as db:
            snap = await store.latest_snapshot(db, self.id)
        if snap is not None:
            self.applied = snap[0]
            self.doc.apply_update(snap[1])
        try:
            last = await self.hub.js.get_last_msg(DOCUMENTS.name, self.subject)
            self._catch_up_to = int(last.seq or 0)
        except NotFoundError:
            self._catch_up_to = 0
        if self._catch_up_to <= self.applied:
            self._caught_up.set()
        nc = self.hub.nc
        self._subs.append(
            await nc.subscribe(awareness_subject(self.wedding_id, self.id), cb=self._on_awareness)
        )
        self._subs.append(await nc.subscribe(control_subject(self.wedding_id), cb=self._on_control))
        self._subs.append(
            await nc.subscribe(access_subject(self.wedding_id, self.id), cb=self._on_access)
        )
        self._updates = await self._subscribe_updates()
        # awareness lives in the processes whose sockets announced it: ask them for it
        query = AwarenessRelay(origin="", role=Role.GUEST, payload=b"")
        await nc.publish(awareness_subject(self.wedding_id, self.id), update_encoder.encode(query))
        await asyncio.wait_for(self._caught_up.wait(), CATCH_UP_TIMEOUT)

    async def _subscribe_updates(self) -> JetStreamContext.PushSubscription:
        """The document's updates after the newest one applied (an ordered consumer)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if self.applied:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.applied + 1
            )
        sub: JetStreamContext.PushSubscription = await self.hub.js.subscribe(
            self.subject,
            stream=DOCUMENTS.name,
            ordered_consumer=True,
            cb=self._on_update,
            config=config,
        )
        return sub

    async def resubscribe(self) -> None:
        """After NATS came back (as the wedding rooms do, app/gateway/hub.py): the updates
        again from the one after the newest applied; older ones are skipped by seq."""
        fresh = await self._subscribe_updates()
        old, self._updates = self._updates, fresh
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()

    async def _announce_local(self) -> None:
        for s in list(self.sockets):
            entries = [self.peers[c].entry for c in s.clients if c in self.peers]
            if entries:
                relay = AwarenessRelay(origin=s.id, role=s.role, payload=awareness_update(entries))
                await self.hub.nc.publish(
                    awareness_subject(self.wedding_id, self.id), update_encoder.encode(relay)
                )

    async def close(self) -> None:
        if self._updates is not None:
            with contextlib.suppress(Exception):
                await self._updates.unsubscribe()
            self._updates = None
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    # -- from NATS ---------------------------------------------------------------------

    async def _on_update(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.applied:
            return
        try:
            u = update_decoder.decode(msg.data)
            self.doc.apply_update(u.update)
        except Exception:  # validated at the edge: only a foreign writer gets here
            log.exception("document %s: update %d not applied", self.id, seq)
            u = None
        self.applied = seq
        if seq >= self._catch_up_to:
            self._caught_up.set()
        if u is None:
            return
        message = create_update_message(u.update)
        for s in list(self.sockets):
            if s.id != u.origin:
                s.send(message)

    async def _on_awareness(self, msg: Msg) -> None:
        try:
            relay = awareness_decoder.decode(msg.data)
            entries = read_awareness(relay.payload) if relay.payload else []
        except Exception:
            return
        if not relay.payload:  # a room opened elsewhere asks: our sockets' states again
            await self._announce_local()
            return
        for e in entries:
            known = self.peers.get(e.client_id)
            if known is not None and known.entry.clock >= e.clock and not e.gone:
                known.at = time.monotonic()  # the same state again: still there
                continue
            if e.gone:
                self.peers.pop(e.client_id, None)
            else:
                self.peers[e.client_id] = Peer(e, relay.role, relay.origin)
        message = awareness_message(entries)
        # to its sender too, as y-websocket's own server does: a client that hears nothing
        # for 30 s reconnects, and its awareness (renewed every 15 s) is what it hears
        for s in list(self.sockets):
            if can_see(s.role, relay.role):
                s.send(message)

    async def _on_control(self, msg: Msg) -> None:
        """The wedding's control messages, as the main socket's hub applies them."""
        try:
            c = _decode_control.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        for s in list(self.sockets):
            if isinstance(c, SessionsEnded) and str(s.session_id) in c.session_ids:
                s.request_close(Close.SESSION_ENDED, "session ended")
            elif isinstance(c, Disconnect) and c.user_id == s.user_id:
                s.request_close(c.code, c.reason)
            elif isinstance(c, RoleChanged) and c.user_id == s.user_id:
                if c.role is None:
                    s.request_close(Close.FORBIDDEN, "no longer a member of this wedding")
                else:
                    s.role = c.role
            elif isinstance(c, StatusChanged):
                if c.status is WeddingStatus.CANCELLED:
                    s.request_close(Close.FORBIDDEN, "this wedding was cancelled")
                s.status = c.status
        self._recheck(self.row.shared)

    async def _on_access(self, msg: Msg) -> None:
        """The document was shared or unshared: every socket's access again."""
        async with self.hub.pool.acquire() as db:
            row = await store.by_id(db, self.id)
        if row is None:
            for s in list(self.sockets):
                s.request_close(Close.FORBIDDEN, "the document was deleted")
            return
        self.row = row
        self._recheck(row.shared)

    def _recheck(self, shared: bool) -> None:
        for s in list(self.sockets):
            read, write = s.access(shared)
            if not read:
                s.request_close(Close.FORBIDDEN, "this member may no longer open this document")
            s.writable = write

    # -- from the sockets ----------------------------------------------------------------

    def awareness_snapshot(self, viewer: DocSocket) -> bytes | None:
        for client in [c for c, p in self.peers.items() if p.stale]:
            del self.peers[client]
        entries = [p.entry for p in self.peers.values() if can_see(viewer.role, p.role)]
        return awareness_message(entries) if entries else None


class DocumentHub:
    """``async with DocumentHub(nc, js, pool) as docs``: the process's document rooms."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool, max_per_user: int = 8
    ) -> None:
        self.nc, self.js, self.pool = nc, js, pool
        self.max_per_user = max_per_user  # document sockets per user and wedding (4029)
        self._per_user: dict[tuple[uuid.UUID, str], int] = {}
        self.rooms: dict[uuid.UUID, DocRoom] = {}
        self._opening: dict[uuid.UUID, asyncio.Lock] = {}  # per document: opened once
        self.published = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for room in list(self.rooms.values()):
            for s in room.sockets:
                s.request_close(Close.GOING_AWAY, "server shutting down")
            await room.close()
        self.rooms.clear()

    def admit(self, wedding_id: uuid.UUID, user_id: str) -> bool:
        """Count one more document socket of the user (False: at the cap, not counted)."""
        key = (wedding_id, user_id)
        if self._per_user.get(key, 0) >= self.max_per_user:
            return False
        self._per_user[key] = self._per_user.get(key, 0) + 1
        return True

    def release(self, wedding_id: uuid.UUID, user_id: str) -> None:
        key = (wedding_id, user_id)
        left = self._per_user.get(key, 0) - 1
        if left > 0:
            self._per_user[key] = left
        else:
            self._per_user.pop(key, None)

    async def resubscribe(self) -> None:
        """After a NATS reconnect: every open room's updates again (retried while
        JetStream is not answering yet)."""
        delay = 0.25
        pending = list(self.rooms.values())
        while pending:
            room = pending.pop(0)
            if self.rooms.get(room.id) is not room:
                continue  # closed meanwhile
            try:
                await room.resubscribe()
                delay = 0.25
            except Exception as exc:
                log.info("document room %s not resubscribed yet: %r", room.id, exc)
                pending.insert(0, room)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def join(self, sock: DocSocket, doc: store.DocumentRow) -> DocRoom:
        lock = self._opening.setdefault(doc.id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(doc.id)
            if room is None:
                room = DocRoom(self, doc)
                try:
                    await room.open()
                except BaseException:
                    await room.close()
                    raise
                self.rooms[doc.id] = room
            room.sockets.add(sock)
            return room

    async def leave(self, sock: DocSocket, room: DocRoom) -> None:
        room.sockets.discard(sock)
        gone = [
            AwarenessEntry(c, room.peers[c].entry.clock + 1, "null")
            for c in sock.clients
            if c in room.peers
        ]
        if gone:
            with contextlib.suppress(Exception):
                await self.publish_awareness(room, sock, awareness_update(gone), raw=True)
        lock = self._opening.setdefault(room.id, asyncio.Lock())
        async with lock:
            if not room.sockets and self.rooms.get(room.id) is room:
                del self.rooms[room.id]
                self._opening.pop(room.id, None)
                await room.close()

    async def publish_update(self, room: DocRoom, sock: DocSocket, update: bytes) -> int:
        """Store one update in JetStream (awaited: durable); its stream seq. Every room of
        the document, this one included, applies it from its consumer."""
        body = update_encoder.encode(
            DocumentUpdate(user_id=sock.user_id, update=update, ts=time.time(), origin=sock.id)
        )
        # the same bytes from the same member re-sent after a reconnect are stored once
        digest = hashlib.sha256(sock.user_id.encode() + b"\0" + update).hexdigest()[:32]
        ack = await self.js.publish(
            room.subject,
            body,
            stream=DOCUMENTS.name,
            headers={"Nats-Msg-Id": f"{room.id}:{digest}"},
        )
        self.published += 1
        return int(ack.seq)

    async def publish_awareness(
        self, room: DocRoom, sock: DocSocket, payload: bytes, *, raw: bool = False
    ) -> None:
        """Relay an awareness update to the document's room in every process."""
        if not raw:
            entries = read_awareness(payload)
            for e in entries:
                known = room.peers.get(e.client_id)
                if known is not None and known.origin != sock.id and not known.stale:
                    return  # another socket's client: nobody else's cursor is overwritten
            for e in entries:
                if e.gone:
                    sock.clients.discard(e.client_id)
                else:
                    sock.clients.add(e.client_id)
        relay = AwarenessRelay(origin=sock.id, role=sock.role, payload=payload)
        await self.nc.publish(
            awareness_subject(room.wedding_id, room.id), update_encoder.encode(relay)
        )

    async def access_changed(self, wedding_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Tell every process's room of the document that its sharing changed."""
        await self.nc.publish(access_subject(wedding_id, document_id), b"")
