"""An in-memory mirror of the presence bucket, fed by one KV watch per process.

Every gateway process and the expiry worker hold the whole table (one small record per
connected device): a welcome's snapshot needs no round trip, and a change costs one KV
put whichever process the other members are on. ``apply`` turns each bucket update into
the change members see: a join, a leave, an update of public fields, or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from streams.buckets import PRESENCE_BUCKET, ensure_bucket
from streams.presence import GATEWAY_PREFIX, Record

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(Record)


class Kind(enum.Enum):
    JOIN = "join"
    LEAVE = "leave"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    record: Record  # after (join, update) or before (leave)
    previous: Record | None = None


@dataclass(slots=True)
class Stored:
    record: Record
    revision: int


class PresenceTable:
    def __init__(self) -> None:
        self.weddings: dict[str, dict[str, Stored]] = {}
        self.gateways: dict[str, float] = {}  # gateway id → local monotonic time last seen

    def record(self, wedding_id: str, connection_id: str) -> Stored | None:
        return self.weddings.get(wedding_id, {}).get(connection_id)

    def room(self, wedding_id: str) -> list[Record]:
        return [s.record for s in self.weddings.get(wedding_id, {}).values()]

    def __iter__(self) -> Iterator[Stored]:
        for room in self.weddings.values():
            yield from room.values()

    def __len__(self) -> int:
        return sum(len(room) for room in self.weddings.values())

    def apply(self, key: str, value: bytes | None, revision: int) -> Change | None:
        """Apply one bucket update (``value`` None: deleted); the visible change, if any."""
        head, _, rest = key.partition(".")
        if head == GATEWAY_PREFIX:
            if value is None:
                self.gateways.pop(rest, None)
            else:
                self.gateways[rest] = time.monotonic()
            return None
        room = self.weddings.setdefault(head, {})
        old = room.get(rest)
        if value is None:
            if old is None:
                return None
            del room[rest]
            if not room:
                del self.weddings[head]
            return Change(Kind.LEAVE, old.record)
        try:
            new = _decode.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignored malformed presence record %s", key)
            return None
        room[rest] = Stored(new, revision)
        if old is None:
            return Change(Kind.JOIN, new)
        if old.record.public() != new.public() or old.record.display_name != new.display_name:
            return Change(Kind.UPDATE, new, old.record)
        return None  # only ownership or disconnect bookkeeping changed: nothing to show


async def presence_bucket(js: JetStreamContext, *, replicas: int) -> KeyValue:
    """The presence bucket, created with ``replicas`` if missing, else reconciled to its
    declaration (streams/buckets.py): no default, so nothing creates it with one replica
    by accident."""
    return await ensure_bucket(js, PRESENCE_BUCKET, replicas=replicas)


class Mirror:
    """``async with Mirror(kv, on_change) as m:`` — ``m.table`` is loaded on entry and then
    kept current; ``on_change`` runs for every visible change, in bucket order."""

    def __init__(self, kv: KeyValue, on_change: Callable[[Change], None]) -> None:
        self.kv = kv
        self.table = PresenceTable()
        self._on_change = on_change
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Mirror:
        self._watcher = await self.kv.watchall()
        while True:  # initial values, then a None marker
            entry = await self._watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            self._apply(entry)
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        deleted = entry.operation in ("DEL", "PURGE")
        change = self.table.apply(entry.key, None if deleted else entry.value, entry.revision or 0)
        if change is not None:
            try:
                self._on_change(change)
            except Exception:  # a bad subscriber must not stop the mirror
                log.exception("presence change handler failed")
