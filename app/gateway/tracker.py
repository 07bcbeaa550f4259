"""A gateway process's side of presence: it writes the records of its own sockets.

- connect: the socket's record is put in the bucket (created: a join, logged durably;
  already there, e.g. a reconnect within the grace: just taken over, no join);
- activity and ``presence`` frames update it, at most one write per socket every
  ``WEDSYNC_PRESENCE_WRITE_EVERY`` (changes in between coalesce); a sweep demotes quiet
  sockets to ``idle`` then ``away`` (only while the status is the server's to choose);
- disconnect: the record is marked disconnected (nothing visible), and deleted after the
  grace unless a new socket of the same session took it over meanwhile (the delete is
  conditional on the revision, so it cannot remove a newer record): then the leave;
- a heartbeat key ``gw.<gateway_id>`` tells the expiry worker this process is alive; if it
  dies, the worker removes its records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from config.settings import PresenceSettings
from runtime.presence import PresenceTable, expire, publish_log, record_key
from streams.permissions import Role
from streams.presence import GATEWAY_PREFIX, Editing, Record, Status

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Record)


def auto_status(quiet: float, settings: PresenceSettings) -> Status:
    """The status the server shows after ``quiet`` seconds without activity."""
    if quiet >= settings.away_after:
        return Status.AWAY
    if quiet >= settings.idle_after:
        return Status.IDLE
    return Status.ACTIVE


@dataclass(eq=False)
class Presence:
    """What one socket knows of its own presence."""

    wedding_id: str
    connection_id: str  # the session: one per device
    user_id: str
    role: Role
    display_name: str | None
    socket: str = field(default_factory=lambda: uuid.uuid4().hex)
    record: Record | None = None
    last_activity: float = field(default_factory=time.monotonic)
    written_at: float = 0.0  # monotonic time of this socket's last presence write
    pending: asyncio.Task[None] | None = None  # a coalesced write due at the window's end

    @property
    def key(self) -> str:
        return record_key(self.wedding_id, self.connection_id)


class PresenceTracker:
    def __init__(
        self, js: JetStreamContext, kv: KeyValue, table: PresenceTable, settings: PresenceSettings
    ) -> None:
        self.js, self.kv, self.table, self.settings = js, kv, table, settings
        self.gateway = uuid.uuid4().hex
        self.local: set[Presence] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> PresenceTracker:
        await self._beat()
        self._loops = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._sweeps())]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for t in self._loops:
            t.cancel()
        for p in list(self.local):  # reconnects elsewhere take these over within the grace
            with contextlib.suppress(Exception):
                await self.disconnect(p, expire_later=False)
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.kv.delete(f"{GATEWAY_PREFIX}.{self.gateway}")

    # -- one socket --------------------------------------------------------------------

    async def connect(self, p: Presence) -> Record:
        now = time.time()
        existing = self.table.record(p.wedding_id, p.connection_id)
        base = existing.record if existing is not None else None
        record = Record(
            wedding_id=p.wedding_id,
            user_id=p.user_id,
            display_name=p.display_name,
            role=p.role,
            connection_id=p.connection_id,
            status=base.status if base and not base.auto else Status.ACTIVE,
            location=base.location if base else None,
            editing=base.editing if base else None,
            connected_at=base.connected_at if base else now,
            last_active_at=now,
            auto=base.auto if base else True,
            gateway=self.gateway,
            owner=p.socket,
        )
        data = _encode.encode(record)
        self.local.add(p)
        p.record = record
        p.written_at = time.monotonic()
        if base is None:
            try:
                revision = await self.kv.create(p.key, data)
            except Exception:  # someone else created it meanwhile: take it over
                await self.kv.put(p.key, data)
            else:
                await publish_log(self.js, "joined", record, revision, now)
        else:
            await self.kv.put(p.key, data)
        return record

    async def change(self, p: Presence, **fields: Any) -> None:
        """Update public fields of this socket's record (``status=...`` is the user's)."""
        if p.record is None:
            return
        if "status" in fields:
            fields["auto"] = fields["status"] == Status.ACTIVE
        new = msgspec.structs.replace(p.record, last_active_at=time.time(), **fields)
        p.record = new
        p.last_activity = time.monotonic()
        await self._write(p)

    async def _write(self, p: Presence) -> None:
        """Put the socket's record now, or, within ``write_every`` of its last put, once at
        the end of that window with whatever the record is by then: a socket sending
        presence frames fast costs at most one write per window, and its last state wins."""
        wait = p.written_at + self.settings.write_every - time.monotonic()
        if p.pending is not None:
            return  # the scheduled write will carry this change
        if wait > 0:
            p.pending = asyncio.create_task(self._write_later(p, wait))
            self._tasks.add(p.pending)
            p.pending.add_done_callback(self._tasks.discard)
            return
        assert p.record is not None
        p.written_at = time.monotonic()
        await self.kv.put(p.key, _encode.encode(p.record))

    async def _write_later(self, p: Presence, wait: float) -> None:
        await asyncio.sleep(wait)
        p.pending = None
        if p.record is None or p not in self.local:
            return  # disconnected meanwhile: its record is marked so already
        p.written_at = time.monotonic()
        try:
            await self.kv.put(p.key, _encode.encode(p.record))
        except Exception as exc:  # nobody waits for it: the next change or sweep retries
            log.warning("presence update of %s failed: %r", p.key, exc)

    async def activity(self, p: Presence) -> None:
        """The socket did something: back to ``active`` if the server had demoted it."""
        p.last_activity = time.monotonic()
        r = p.record
        if r is not None and r.auto and r.status is not Status.ACTIVE:
            await self.change(p, status=Status.ACTIVE)

    async def edit(self, p: Presence, editing: Editing | None) -> None:
        await self.change(p, editing=editing)

    async def disconnect(self, p: Presence, *, expire_later: bool = True) -> None:
        """Mark the record disconnected, if this socket still owns it in the bucket (the
        bucket, not the table: this process may no longer follow the room)."""
        self.local.discard(p)
        if p.record is None:
            return
        gone = _encode.encode(msgspec.structs.replace(p.record, disconnected_at=time.time()))
        p.record = None
        for _ in range(3):  # a write of this socket's still landing: read again
            try:
                entry = await self.kv.get(p.key)
            except (KeyNotFoundError, KeyDeletedError):
                return  # expired meanwhile: nothing left to mark
            if entry.value is None or _decode.decode(entry.value).owner != p.socket:
                return  # another socket of this session owns the record now
            try:
                revision = await self.kv.update(p.key, gone, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            break
        else:
            return
        if expire_later:
            task = asyncio.create_task(self._expire_after_grace(p.key, revision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _expire_after_grace(self, key: str, revision: int) -> None:
        await asyncio.sleep(self.settings.grace)
        try:
            await expire(self.js, self.kv, key, revision)
        except Exception as exc:  # the worker will do it
            log.warning("presence expiry of %s failed: %r", key, exc)

    # -- the process -------------------------------------------------------------------

    async def _beat(self) -> None:
        await self.kv.put(f"{GATEWAY_PREFIX}.{self.gateway}", str(time.time()).encode())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("presence heartbeat failed: %r", exc)

    async def _sweeps(self) -> None:
        """Demote quiet sockets: active → idle → away (only server-chosen statuses)."""
        every = max(0.05, min(self.settings.idle_after, self.settings.away_after) / 4)
        while True:
            await asyncio.sleep(min(every, 5.0))
            now = time.monotonic()
            for p in list(self.local):
                r = p.record
                if r is None or not r.auto:
                    continue
                wanted = auto_status(now - p.last_activity, self.settings)
                if wanted is not r.status:
                    with contextlib.suppress(Exception):
                        new = msgspec.structs.replace(r, status=wanted)
                        p.record = new
                        await self.kv.put(p.key, _encode.encode(new))
