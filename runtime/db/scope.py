"""Which rows a connection may touch: the wedding scope row-level security enforces.

Every wedding-scoped table has a policy on two settings (migration 0011):
``wedsync.wedding_id`` (the rows of that wedding) and ``wedsync.scope = 'system'`` (every
wedding: only the named paths of docs/security.md). Neither set: no rows at all, so a
query that forgot its ``WHERE wedding_id`` finds nothing instead of another tenant.

The scope of the running task is a context variable (tasks inherit it): ``wedding(id)``
around work for one wedding (the HTTP edge sets it from the path: app/edge_scope.py),
``system(reason)`` around a named cross-wedding path. The pool applies it when a connection
is acquired (``on_acquire``, the pool's ``setup``) and asyncpg's reset on release
(``RESET ALL``) clears it, so a connection never carries one task's scope to the next (on
a server whose reset has no ``RESET ALL``, an unscoped acquire clears it instead).
``enter(conn, id)`` narrows an already acquired connection to one wedding for the rest of
its transaction (a worker learns the wedding from the message it decoded).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg

from runtime.db.types import Conn


@dataclass(frozen=True, slots=True)
class Scope:
    """One wedding's rows, or (``system`` names why) every wedding's."""

    wedding_id: uuid.UUID | None = None
    system: str | None = None

    @property
    def settings(self) -> tuple[str, str]:
        """(``wedsync.wedding_id``, ``wedsync.scope``) as the policies read them."""
        return (
            "" if self.wedding_id is None else str(self.wedding_id),
            "" if self.system is None else "system",
        )


_current: ContextVar[Scope | None] = ContextVar("wedsync_db_scope", default=None)

_SET = "SELECT set_config('wedsync.wedding_id', $1, false), set_config('wedsync.scope', $2, false)"
_SET_LOCAL = (
    "SELECT set_config('wedsync.wedding_id', $1, true), set_config('wedsync.scope', '', true)"
)


def current() -> Scope | None:
    return _current.get()


@contextlib.contextmanager
def _scoped(scope: Scope) -> Iterator[Scope]:
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def wedding(wedding_id: uuid.UUID | str) -> contextlib.AbstractContextManager[Scope]:
    """Connections acquired inside see the rows of this wedding only."""
    return _scoped(Scope(wedding_id=uuid.UUID(str(wedding_id))))


def system(reason: str) -> contextlib.AbstractContextManager[Scope]:
    """Connections acquired inside see every wedding: a named path that must (``reason``
    says why, for whoever reads the code; docs/security.md lists them)."""
    return _scoped(Scope(system=reason))


def process_system(reason: str) -> None:
    """The rest of this task (and every task it starts) is in system scope: a worker
    process's entry point, whose consumers and timers act for whichever wedding an event
    or a due row names."""
    _current.set(Scope(system=reason))


@contextlib.asynccontextmanager
async def system_connection(pool: asyncpg.Pool, reason: str) -> AsyncIterator[Conn]:
    """``pool.acquire()`` for a named cross-wedding path (see ``system``)."""
    with system(reason):
        async with pool.acquire() as conn:
            yield conn


def clears_on_release(conn: Any) -> bool:
    """Whether asyncpg's reset on release clears the settings (``RESET ALL``): PostgreSQL,
    yes; a server without ``RESET`` (asyncpg leaves it out of the reset query, e.g. on
    CockroachDB), no."""
    return "RESET ALL" in conn.get_reset_query()


async def on_acquire(conn: Any) -> None:
    """The pool's ``setup``: put the task's scope on the connection it is handed. No round
    trip when there is none and the reset on release cleared the last one; where the
    reset does not clear settings, an unscoped acquire clears them itself."""
    scope = _current.get()
    if scope is not None:
        await conn.execute(_SET, *scope.settings)
    elif not clears_on_release(conn):
        await conn.execute(_SET, "", "")


async def enter(conn: Conn, wedding_id: uuid.UUID) -> None:
    """Narrow ``conn`` to one wedding until its transaction ends (call inside one)."""
    await conn.execute(_SET_LOCAL, str(wedding_id))
