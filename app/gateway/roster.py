"""Presence scoped to the rooms a gateway process serves.

A process holds only the records of weddings it has sockets in, and applies only their
changes: what it costs grows with its own rooms, not with every connection of the system.

- **Opening a room** subscribes (core NATS, no consumer on the server) to the wedding's
  keys as JetStream republishes them once stored (``wedsync.live.presence.<wedding>.*``,
  streams/buckets.py), then reads the wedding's keys once (one batch direct get: no consumer)
  and merges both by revision: what arrived while reading is newer or older than what was
  read, never lost in between.
- **Live**, each republished change (its ``Nats-Sequence`` is the KV revision) is applied
  to the table; a change older than the record held is ignored.
- **After NATS came back** every room reads its keys again (a core subscription misses what
  was published while the connection was down) and the difference shows as leaves, joins
  and updates.
- **Ghost-free** without trusting that every republish arrives (it is at most once, e.g. on
  a stream leader change): a record this process still shows although it should be gone —
  disconnected past the grace, or owned by a gateway whose heartbeat stopped — is checked
  against the bucket and removed if the bucket no longer has it (``verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from runtime.presence import Change, PresenceTable, Stamped, read_keys, record_key
from streams.presence import GATEWAY_PREFIX, Record
from streams.subjects import PRESENCE_LIVE_ROOT, presence_live_subject

log = logging.getLogger(__name__)

_PREFIX = len(PRESENCE_LIVE_ROOT) + 1
_DELETED = ("DEL", "PURGE")


def live_update(msg: Msg) -> tuple[str, Stamped] | None:
    """A republished bucket change: its key and state (None if it is not one)."""
    headers = msg.headers or {}
    try:
        revision = int(headers["Nats-Sequence"])
    except (KeyError, ValueError):
        return None
    deleted = headers.get("KV-Operation") in _DELETED
    return msg.subject[_PREFIX:], Stamped(None if deleted else msg.data, revision)


class Roster:
    """One room's presence in ``table``: ``await open()``, ``await close()``; every visible
    change goes to ``on_change`` in bucket order."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        kv: KeyValue,
        table: PresenceTable,
        wedding_id: str,
        on_change: Callable[[Change], None],
    ) -> None:
        self.nc, self.js, self.kv, self.table = nc, js, kv, table
        self.wedding_id = wedding_id
        self._on_change = on_change
        self._sub: Subscription | None = None
        # live changes that arrive while the keys are being read: merged after
        self._held: list[tuple[str, Stamped]] | None = None
        self._reading = asyncio.Lock()  # one read at a time

    async def open(self) -> None:
        self._sub = await self.nc.subscribe(
            presence_live_subject(self.wedding_id), cb=self._on_live
        )
        await self.reload()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self.table.drop(self.wedding_id)

    def records(self) -> list[Record]:
        return self.table.room(self.wedding_id)

    async def reload(self) -> None:
        """The room's records as the bucket has them now, merged with what arrives
        meanwhile; records no longer there leave."""
        async with self._reading:
            self._held = []
            try:
                read = await read_keys(self.kv, f"{self.wedding_id}.*", self.js)
            except BaseException:
                self._release(self._held)
                raise
            held, self._held = self._held, None
            newest: dict[str, Stamped] = {}
            for key, state in (*read.items(), *held):
                known = newest.get(key)
                if known is None or state.revision > known.revision:
                    newest[key] = state
            shown = self.table.weddings.get(self.wedding_id, {})
            for key in {record_key(self.wedding_id, c) for c in shown} - newest.keys():
                self._apply(key, Stamped(None, 0))  # gone without a trace (purged)
            for key, state in newest.items():
                self._apply(key, state)

    def _release(self, held: list[tuple[str, Stamped]] | None) -> None:
        self._held = None
        for key, state in held or ():
            self._apply(key, state)

    async def _on_live(self, msg: Msg) -> None:
        update = live_update(msg)
        if update is None:
            return
        if self._held is not None:
            self._held.append(update)
        else:
            self._apply(*update)

    def _apply(self, key: str, state: Stamped) -> None:
        change = self.table.apply(key, state.value, state.revision)
        if change is not None:
            try:
                self._on_change(change)
            except Exception:  # a bad subscriber must not stop the room's presence
                log.exception("presence change handler failed")

    async def verify(self, key: str) -> None:
        """Bring one key in line with the bucket (a change may have been missed)."""
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError) as exc:  # deleted (at its marker) or never
            gone = getattr(exc, "entry", None)
            self._apply(key, Stamped(None, int(getattr(gone, "revision", 0) or 0)))
            return
        if entry.value is not None:
            self._apply(key, Stamped(entry.value, entry.revision or 0))


class Gateways:
    """The gateway processes' heartbeats (``gw.<id>`` keys), followed live: what the ghost
    check needs to tell a record whose owner died."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.seen: dict[str, float] = {}  # gateway id -> monotonic time last seen
        self.started = time.monotonic()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Gateways:
        self._sub = await self.nc.subscribe(
            f"{PRESENCE_LIVE_ROOT}.{GATEWAY_PREFIX}.*", cb=self._on_beat
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_beat(self, msg: Msg) -> None:
        update = live_update(msg)
        if update is None:
            return
        gateway = update[0].partition(".")[2]
        if update[1].value is None:
            self.seen.pop(gateway, None)
        else:
            self.seen[gateway] = time.monotonic()

    def quiet_for(self, gateway: str) -> float:
        """Seconds since this gateway's last heartbeat (since we started, if none yet)."""
        return time.monotonic() - self.seen.get(gateway, self.started)
