"""Finding and blanking one person's identifiers (names, email addresses, phone numbers,
IP addresses, device fingerprints) in free text, JSON values and stored bytes.

Emails, phones, IPs and fingerprints match anywhere, case-insensitively; names match as
whole words (a name "Ann" is not erased out of "Annual") and only from 3 characters on
(shorter ones would blank unrelated text). JSON escaping is matched too, so a name with a
quote in it is found in stored JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

ERASED = "[erased]"
MIN_NAME = 3


def _forms(value: str) -> set[str]:
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def _pattern(values: set[str], names: set[str], forms: bool) -> str:
    parts = []
    for v in sorted(values, key=len, reverse=True):
        parts += [re.escape(f) for f in (_forms(v) if forms else {v})]
    for n in sorted(names, key=len, reverse=True):
        parts += [rf"(?<!\w){re.escape(f)}(?!\w)" for f in (_forms(n) if forms else {n})]
    return "|".join(parts)


class Redactor:
    def __init__(self, *, exact: set[str], names: set[str]) -> None:
        self.exact = {v.strip() for v in exact if v and v.strip()}
        self.names = {n.strip() for n in names if n and len(n.strip()) >= MIN_NAME}
        text = _pattern(self.exact, self.names, forms=False)
        raw = _pattern(self.exact, self.names, forms=True)
        self._text = re.compile(text, re.IGNORECASE) if text else None
        self._raw = re.compile(raw.encode(), re.IGNORECASE) if raw else None

    @property
    def empty(self) -> bool:
        return self._text is None

    def like_patterns(self) -> list[str]:
        """``ILIKE`` patterns preselecting rows that may hold an identifier."""
        out = set()
        for v in self.exact | self.names:
            for f in _forms(v):
                out.add("%" + f.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%")
        return sorted(out)

    def found(self, data: bytes | str) -> bool:
        if self._raw is None:
            return False
        raw = data.encode() if isinstance(data, str) else data
        return self._raw.search(raw) is not None

    def text(self, value: str) -> str:
        return value if self._text is None else self._text.sub(ERASED, value)

    def value(self, value: Any) -> Any:
        """A JSON value with every string (and key) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        return value

    def json_bytes(self, data: bytes) -> bytes:
        """Stored JSON bytes with identifiers blanked (non-JSON bytes, and JSON nested too
        deeply to walk: blanked as text, in their JSON-escaped forms too)."""
        try:
            return msgspec.json.encode(self.value(msgspec.json.decode(data)))
        except (msgspec.DecodeError, RecursionError):
            return data if self._raw is None else self._raw.sub(ERASED.encode(), data)
