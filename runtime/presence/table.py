"""The presence bucket in memory: a table of records by wedding, and two ways to fill it.

- ``Mirror``: one KV watch of the whole bucket, for the processes that need every wedding
  (the expiry worker, the notifications planner);
- ``read_keys`` / ``read_table``: one pass over some keys (a wedding's: one batch direct
  get; or all: a short-lived consumer), for a gateway opening a room (it then follows
  that room's keys live, app/gateway/roster.py) and for the admin API's global views.

``apply`` turns each bucket update into the change members see: a join, a leave, an update
of public fields, or nothing; an update older than the one held (by revision) is ignored,
so two sources of the same changes can be merged.
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

from runtime import direct, tasks
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

    def drop(self, wedding_id: str) -> None:
        """Forget a wedding's records (its room closed in this process)."""
        self.weddings.pop(wedding_id, None)

    def apply(self, key: str, value: bytes | None, revision: int) -> Change | None:
        """Apply one bucket update (``value`` None: deleted); the visible change, if any.
        ``revision`` 0 means "now, whatever is held"; else an update at or below the held
        record's revision is an old one and changes nothing."""
        head, _, rest = key.partition(".")
        if head == GATEWAY_PREFIX:
            if value is None:
                self.gateways.pop(rest, None)
            else:
                self.gateways[rest] = time.monotonic()
            return None
        room = self.weddings.setdefault(head, {})
        old = room.get(rest)
        if old is not None and revision and revision <= old.revision:
            return None
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


@dataclass(frozen=True, slots=True)
class Stamped:
    """A key's newest state as read: ``value`` None once deleted."""

    value: bytes | None
    revision: int


#: keys one batch direct get answers (more: read through a consumer instead)
DIRECT_BATCH = 1000
_KV_SUBJECT = f"$KV.{PRESENCE_BUCKET.name}."


async def read_keys(
    kv: KeyValue, pattern: str = ">", js: JetStreamContext | None = None
) -> dict[str, Stamped]:
    """Every key matching ``pattern`` with its newest state, in one pass: deleted keys are
    there with ``value`` None.

    With ``js``, one batch direct get (ADR-31, nats-server >= 2.11: the last message of
    every matching key in one request, served by any replica, no consumer created), as a
    gateway opening a room does; otherwise, or when the server cannot answer so (older
    server, more keys than :data:`DIRECT_BATCH`), a short-lived ordered consumer."""
    if js is not None:
        direct = await _read_direct(js, pattern)
        if direct is not None:
            return direct
    return await _read_watched(kv, pattern)


async def _read_direct(js: JetStreamContext, pattern: str) -> dict[str, Stamped] | None:
    out: dict[str, Stamped] = {}
    pending = 0
    try:
        got = await direct.last_for(
            js, PRESENCE_BUCKET.stream, [_KV_SUBJECT + pattern], batch=DIRECT_BATCH
        )
        for msg in got:
            headers = msg.headers or {}
            deleted = headers.get("KV-Operation") in ("DEL", "PURGE")
            key = (msg.subject or "")[len(_KV_SUBJECT) :]
            out[key] = Stamped(None if deleted else msg.data, msg.seq or 0)
            pending = int(headers.get("Nats-Num-Pending", 0))
    except direct.NoMessages:
        return {}
    except direct.UNSUPPORTED as exc:
        log.debug("presence keys %s not read directly: %r", pattern, exc)
        return None
    return None if pending else out  # more than one batch: through a consumer


async def _read_watched(kv: KeyValue, pattern: str) -> dict[str, Stamped]:
    watcher = await kv.watch(pattern)
    out: dict[str, Stamped] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
            if entry is None:  # initial values done
                break
            deleted = entry.operation in ("DEL", "PURGE")
            out[entry.key] = Stamped(None if deleted else entry.value, entry.revision or 0)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
    return out


async def read_table(
    kv: KeyValue, pattern: str = ">", js: JetStreamContext | None = None
) -> PresenceTable:
    """A table of the keys matching ``pattern`` as they are now (not followed)."""
    table = PresenceTable()
    for key, state in (await read_keys(kv, pattern, js)).items():
        if state.value is not None:
            table.apply(key, state.value, state.revision)
    return table


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
            await tasks.stop(self._task)

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
