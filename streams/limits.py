"""What the edge accepts: every value a client sends must be storable before it is acked.

One validator for the WebSocket gateway (every decoded frame) and the HTTP API (every JSON
body, path and query parameter). It refuses what JetStream would hold but PostgreSQL (or
a reader) never could, so nothing acknowledged fails later in a worker:

* strings with a NUL character (``text`` and ``jsonb`` refuse ``\\u0000``) or a lone
  surrogate (not UTF-8: asyncpg cannot encode it) — dictionary keys included;
* nesting deeper than :data:`MAX_DEPTH` objects and arrays, the document itself counting
  as one (readers decode recursively: a 600-level event broke history and erase);
* more than :data:`MAX_VALUES` values in one document (every object member and array item,
  counted over the whole document);
* integers outside int64 (``bigint``, and what every JSON reader of ours round-trips) and
  floats that are not finite.

It is a post-decode check, not msgspec ``Meta(pattern=...)`` on each string type: one walk
covers typed fields, free-form ``dict[str, Any]`` values and their keys alike (a pattern
cannot reach a free-form value or a key, and every new string field would need one), with
one rule and one error message naming where the problem is (``$.data.text``). The walk is
iterative, so it cannot hit Python's recursion limit whatever it is given.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

MAX_DEPTH = 32
MAX_VALUES = 10_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: the longest display name (``streams.api.Name``), also applied to a JWT ``name`` claim
NAME_MAX = 200

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


class Unstorable(ValueError):
    """A value no store of ours can hold; ``problem`` says what, ``path`` where."""

    def __init__(self, problem: str, path: str = "$") -> None:
        super().__init__(f"{problem} at {path}")
        self.problem, self.path = problem, path


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None. ``isascii`` is O(1) in CPython."""
    if "\x00" in value:
        return "NUL character in a string"
    if not value.isascii() and _SURROGATE.search(value) is not None:
        return "lone surrogate in a string"
    return None


def decode_error(message: str, text: str | bytes) -> str:
    """msgspec's message for JSON it could not decode, with a hint when the text has a
    surrogate escape (msgspec says "Input data was truncated" of a lone ``\\ud800``)."""
    if isinstance(text, str):
        found = _SURROGATE_ESCAPE.search(text) is not None
    else:
        found = _SURROGATE_ESCAPE_BYTES.search(text) is not None
    if not found:
        return message
    return f"{message} (a \\uD800-\\uDFFF escape is only valid as half of a surrogate pair)"


def utf8_over(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 — without encoding it in
    the common cases: an ASCII string has one byte per character (``isascii`` is O(1)) and
    no character takes more than four. Only a non-ASCII text between ``limit / 4`` and
    ``limit`` characters is encoded to count (one copy of at most ``4 * limit`` bytes)."""
    n = len(text)
    if n > limit:
        return True
    if text.isascii() or 4 * n <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _scalar_problem(value: Any) -> str | None:
    """What is wrong with one value that is not a container, or None."""
    kind = type(value)
    if kind is str or isinstance(value, str):
        return text_problem(value)
    if kind is bool or value is None:
        return None
    if kind is int or isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else "integer outside int64"
    if (kind is float or isinstance(value, float)) and not math.isfinite(value):
        return "number that is not finite"
    return None  # dates, enums, UUIDs... of typed fields: msgspec checked them


_Trail = tuple[Any, "_Trail"] | None


def _path(trail: _Trail) -> str:
    keys: list[str] = []
    while trail is not None:
        key, trail = trail
        if isinstance(key, int):
            keys.append(f"[{key}]")
        elif isinstance(key, str) and key.isidentifier():
            keys.append(f".{key}")
        else:  # escaped: the message itself holds no NUL or surrogate
            keys.append(f"[{key!a}]")
    return "$" + "".join(reversed(keys))


def _members(item: Any) -> list[tuple[Any, Any]] | None:
    """(key, value) pairs of a container other than a plain dict or list (a Struct's set
    fields, a tuple, a subclass), None for a scalar."""
    if isinstance(item, msgspec.Struct):
        return [
            (name, v)
            for name in item.__struct_fields__
            if (v := getattr(item, name)) is not msgspec.UNSET
        ]
    if isinstance(item, dict):
        return list(item.items())
    if isinstance(item, list | tuple):
        return list(enumerate(item))
    return None


def check(
    value: Any,
    *,
    max_depth: int = MAX_DEPTH,
    max_values: int = MAX_VALUES,
    from_json: bool = False,
) -> None:
    """Raise :class:`Unstorable` unless ``value`` (decoded JSON, or a msgspec Struct as
    decoded from it) fits every rule above. ``from_json``: msgspec decoded it from JSON,
    whose decoder refuses every lone surrogate escape, so they are not looked for.

    Iterative; each container carries a link to its parent, so the path of a problem is
    only spelled out when there is one. Strings, numbers and plain dicts and lists — all
    of decoded JSON — are handled inline: ~0.2 µs a value."""
    look = not from_json
    # (container or value, depth of its parent, trail): trail is (key, parent's trail)
    stack: list[tuple[Any, int, _Trail]] = [(value, 0, None)]
    seen = 1
    while stack:
        item, depth, trail = stack.pop()
        kind = type(item)
        members: Any
        if kind is dict:
            members, size = item.items(), len(item)
        elif kind is list:
            members, size = enumerate(item), len(item)
        elif (members := _members(item)) is not None:
            size = len(members)
        else:
            if (problem := _scalar_problem(item)) is not None:
                raise Unstorable(problem, _path(trail))
            continue
        depth += 1
        if depth > max_depth:
            raise Unstorable(f"nested deeper than {max_depth} levels", _path(trail))
        seen += size
        if seen > max_values:
            raise Unstorable(f"more than {max_values} values in one document")
        for key, child in members:
            if type(key) is str and (
                "\x00" in key or (look and not key.isascii() and _SURROGATE.search(key))
            ):
                raise Unstorable(f"{text_problem(key)} (an object key)", _path((key, trail)))
            kind = type(child)
            if kind is str:
                if "\x00" in child or (look and not child.isascii() and _SURROGATE.search(child)):
                    raise Unstorable(str(text_problem(child)), _path((key, trail)))
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    raise Unstorable("integer outside int64", _path((key, trail)))
            elif kind is float:
                if not math.isfinite(child):
                    raise Unstorable("number that is not finite", _path((key, trail)))
            elif kind is not bool and child is not None:
                stack.append((child, depth, (key, trail)))  # a container, or checked above
