"""What an erase rewrites, and how: one person's own messages, and mentions of them in
other people's messages of a wedding they belonged to.

Identifiers come only from what this wedding stored about the person (their member
record: display name, decrypted email and phone), never from a token or a request, and
every match is a whole word, so nobody can choose what an erase blanks:

* the full display name, case-insensitively, from :data:`MIN_NAME` characters on;
* its first word (a first name, "Zelda" of "Zelda Quimby-Okafor") with its capital
  letter as stored, from :data:`MIN_NAME` characters on, and only if no other member of
  the wedding has that word in their name (then "Zelda" may be either of them: kept);
* their email (it must look like one) and phone (at least :data:`MIN_PHONE_DIGITS`
  digits), case-insensitively.

Stored events are rewritten as bytes without decoding the event's data (a message may
nest deeper than a decoder recurses): the envelope the gateway, the worker and the admin
API encode (``{"id","type","channel","actor","data","ts"}``, in that order) is split
around ``data``, which is replaced (their own message) or redacted as JSON text (the
identifiers' JSON-escaped forms are matched too).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ERASED = "[erased]"
#: ``data`` of a message whose author was erased (``{"erased": true}``).
ERASED_DATA = b'{"erased":true}'
MIN_NAME = 3
MIN_EMAIL = 6
MIN_PHONE_DIGITS = 7
_WORD_BEFORE = r"(?:(?<!\w)|(?<=\\[nrtbf]))"  # a JSON escape (\n) ends a word too
_WORD_AFTER = r"(?!\w)"


def _forms(value: str) -> list[str]:
    """The value as written, and as it appears inside a JSON string."""
    escaped = json.dumps(value, ensure_ascii=False)[1:-1]
    return [value] if escaped == value else [value, escaped]


def _alternation(values: set[str]) -> str:
    forms = {f for v in values for f in _forms(v)}
    return "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))


def first_word(name: str) -> str:
    return name.split()[0] if name.split() else ""


def _within(name: str, others: list[str]) -> bool:
    """Whether ``name`` is (a run of whole words of) another member's name: a mention
    of it may be of them, so it is not erased."""
    pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.I)
    return any(pattern.search(other) for other in others)


@dataclass(frozen=True, slots=True)
class Identifiers:
    """One person's identifiers in one wedding, as that wedding stored them."""

    names: frozenset[str] = frozenset()  # full display names: any case
    first_names: frozenset[str] = frozenset()  # exact case
    contacts: frozenset[str] = frozenset()  # emails and phones: any case

    @classmethod
    def of(
        cls, display_name: str | None, contacts: list[str | None], others: list[str]
    ) -> Identifiers:
        """Theirs, given the display names of the wedding's other members."""
        names: set[str] = set()
        firsts: set[str] = set()
        name = (display_name or "").strip()
        if len(name) >= MIN_NAME and not _within(name, others):
            names.add(name)
        first = first_word(name)
        if first != name and len(first) >= MIN_NAME and not _within(first, others):
            firsts.add(first)
        kept = set()
        for c in contacts:
            value = (c or "").strip()
            email = "@" in value and len(value) >= MIN_EMAIL
            phone = sum(ch.isdigit() for ch in value) >= MIN_PHONE_DIGITS
            if email or phone:
                kept.add(value)
        return cls(frozenset(names), frozenset(firsts), frozenset(kept))


class Redactor:
    """Blanks one person's :class:`Identifiers` in text and in JSON text."""

    def __init__(self, ids: Identifiers) -> None:
        self.ids = ids
        loose = _alternation(set(ids.names) | set(ids.contacts))
        exact = _alternation(set(ids.first_names))
        self._loose = re.compile(f"{_WORD_BEFORE}(?:{loose}){_WORD_AFTER}", re.I) if loose else None
        self._exact = re.compile(f"{_WORD_BEFORE}(?:{exact}){_WORD_AFTER}") if exact else None

    @property
    def empty(self) -> bool:
        return self._loose is None and self._exact is None

    def text(self, value: str) -> str:
        for pattern in (self._loose, self._exact):
            if pattern is not None:
                value = pattern.sub(ERASED, value)
        return value

    def json_text(self, data: bytes) -> bytes:
        """JSON bytes with the identifiers blanked inside them (valid JSON stays valid:
        the replacement needs no escaping and no identifier spans a quote unescaped)."""
        if self.empty:
            return data
        return self.text(data.decode()).encode()

    def like_patterns(self) -> list[str]:
        """``ILIKE`` patterns preselecting rows that may hold an identifier."""
        values = set(self.ids.names) | set(self.ids.first_names) | set(self.ids.contacts)
        out = set()
        for v in values:
            escaped = v.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            out.add(f"%{escaped}%")
        return sorted(out)


_HEAD = re.compile(
    rb'^\{"id":"(?:[^"\\]|\\.)*","type":"((?:[^"\\]|\\.)*)","channel":"[a-z_]+",'
    rb'"actor":(\{[^{}]*\}),"data":'
)
_TAIL = re.compile(rb',"ts":[-+0-9.eE]+\}$')


def erase_event(stored: bytes, user_id: str, redactor: Redactor | None) -> bytes | None:
    """The stored event as an erase of ``user_id`` leaves it; None when unchanged.

    Their own messages lose their content (``data`` becomes ``{"erased": true}``); other
    free text (members' messages, server events) has their identifiers blanked; events
    the conflicts worker derived from wedding state are never rewritten (clients fold
    them: the state changes an erase makes are published as changes instead)."""
    head = _HEAD.match(stored)
    tail = _TAIL.search(stored)
    if head is None or tail is None or tail.start() < head.end():
        return None  # not an envelope this code wrote: left as it is
    kind = head.group(1)
    actor = json.loads(head.group(2))
    server = bool(actor.get("server"))
    if kind != b"message" and not server:
        return None
    data = stored[head.end() : tail.start()]
    if actor.get("user_id") == user_id and not server:
        new = ERASED_DATA
    elif redactor is not None:
        new = redactor.json_text(data)
    else:
        return None
    return None if new == data else stored[: head.end()] + new + stored[tail.start() :]
