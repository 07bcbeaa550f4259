"""msgspec schemas shared by the edge and the workers: the one definition of each shape."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error the API returns: a stable machine code and a human sentence."""

    code: str
    message: str


class Health(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, str]
