"""The connection types: ``Conn``, what store functions take (a plain connection or one
borrowed from a pool), and ``Pooled``, what a request handler receives as ``db``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

if TYPE_CHECKING:
    Pooled: TypeAlias = PoolConnectionProxy[Any]
else:  # one class at run time: Litestar reads handlers' annotations to inject ``db``
    Pooled = PoolConnectionProxy
