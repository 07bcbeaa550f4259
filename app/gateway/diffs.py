"""Batching a room's presence changes into ``presence_diff`` frames.

A change goes out at once while the room has sent fewer than ``burst`` diffs in the last
``window`` (so a lone change, or a few, are never delayed); beyond that, changes are
coalesced per connection and sent together when the window allows again, so a busy room
sends at most ``burst`` diffs per window however many changes it sees. Coalescing keeps
what members would conclude anyway: a join then a leave inside one window shows nothing;
a leave then a join (a quick reconnect) shows at most an update.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from runtime.presence.table import Change, Kind
from streams.permissions import Role
from streams.presence import UserPresence, group_by_user
from streams.protocol import PresenceDiffFrame


def coalesce(prev: Change | None, new: Change) -> Change | None:
    """One change standing for ``prev`` followed by ``new`` (same connection)."""
    if prev is None:
        return new
    if prev.kind is Kind.JOIN:
        return None if new.kind is Kind.LEAVE else Change(Kind.JOIN, new.record)
    if prev.kind is Kind.UPDATE:
        if new.kind is Kind.LEAVE:
            return Change(Kind.LEAVE, new.record)
        return Change(Kind.UPDATE, new.record, prev.previous)
    # prev is a leave
    if new.kind is Kind.JOIN:
        if prev.record.public() == new.record.public():
            return None
        return Change(Kind.UPDATE, new.record, prev.record)
    return new


def diff_frame(
    changes: list[Change], viewer: Role, exclude: str | None
) -> PresenceDiffFrame | None:
    """The diff ``viewer`` may see (streams/presence.py: ``group_by_user``), without its own
    connection; None if nothing is left."""
    mine = [c for c in changes if c.record.connection_id != exclude]

    def of(kind: Kind) -> list[UserPresence]:
        return group_by_user([c.record for c in mine if c.kind is kind], viewer)

    joins, leaves, updates = of(Kind.JOIN), of(Kind.LEAVE), of(Kind.UPDATE)
    if not (joins or leaves or updates):
        return None
    return PresenceDiffFrame(joins=joins, leaves=leaves, updates=updates)


class DiffBatcher:
    def __init__(
        self, window: float, deliver: Callable[[list[Change]], None], burst: int = 4
    ) -> None:
        self.window = window
        self._deliver = deliver
        self._pending: dict[str, Change] = {}
        self._flushes: deque[float] = deque(maxlen=max(1, burst))  # times of recent flushes
        self._timer: asyncio.TimerHandle | None = None

    def add(self, change: Change) -> None:
        cid = change.record.connection_id
        merged = coalesce(self._pending.get(cid), change)
        if merged is None:
            self._pending.pop(cid, None)
        else:
            self._pending[cid] = merged
        if self._timer is not None:
            return  # goes out with the batch already scheduled
        loop = asyncio.get_running_loop()
        full = len(self._flushes) == self._flushes.maxlen
        wait = self._flushes[0] + self.window - loop.time() if full else 0.0
        if wait <= 0:
            self.flush()
        else:
            self._timer = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        self._timer = None
        self._flushes.append(asyncio.get_running_loop().time())
        changes = list(self._pending.values())
        self._pending.clear()
        if changes:
            self._deliver(changes)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
