"""Guest-list contacts (``guests.contact``) encrypted at rest: in ``entities.fields``, the
audit log, WEDSYNC_CHANGES and the stored events of WEDSYNC_EVENTS and the archive.

The gateway seals the field when it accepts a change frame (:meth:`GuestContacts.seal`),
so everything downstream — the conflicts worker, PostgreSQL, JetStream — only ever holds
``enc1:<Fernet token>``; the worker applies it as an opaque string and needs no key.
Readers with permission get the plain value where it is served (:meth:`open_event` and
friends): ``/state``, history, resume and live event frames of the ``guests`` channel, the
audit log, exports and webhook payloads. Only events of the guests channel are decoded for
that; every other event is still spliced into its frame from the stored bytes untouched.

The key is derived from ``WEDSYNC_DATA_KEY`` for this purpose alone (HKDF), and only the
``contact`` positions are opened, so a token pasted into another field stays a token, and a
member's sealed email could not be opened through a guest field either. A value stored
before encryption existed (no prefix) is served as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from cryptography.fernet import InvalidToken

from runtime.crypto import ContactCipher
from streams.state import EntityKind

log = logging.getLogger(__name__)

PREFIX = "enc1:"
FIELD = "contact"
PURPOSE = "wedsync guest contact v1"


class GuestContacts:
    def __init__(self, cipher: ContactCipher) -> None:
        self._cipher = cipher.derived(PURPOSE)

    def seal(self, kind: EntityKind, fields: dict[str, Any]) -> dict[str, Any]:
        """A change's validated fields with a guest's contact sealed."""
        value = fields.get(FIELD)
        if kind is not EntityKind.GUESTS or not isinstance(value, str):
            return fields
        token = self._cipher.seal(value)
        assert token is not None
        return {**fields, FIELD: PREFIX + token.decode()}

    def open_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        try:
            return self._cipher.open(value[len(PREFIX) :].encode())
        except InvalidToken:  # sealed under a key no longer configured
            log.warning("a guest contact no configured key opens was served as null")
            return None

    def open_fields(self, fields: Any) -> Any:
        """Entity fields (a dict, changed in place) with the contact opened."""
        if isinstance(fields, dict) and FIELD in fields:
            fields[FIELD] = self.open_value(fields[FIELD])
        return fields

    def open_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A decoded guests-channel event, its contact positions opened (in place)."""
        data = event.get("data")
        if not isinstance(data, dict):
            return event
        self.open_fields(data.get("fields"))  # entity.*, approval.requested
        current = data.get("current")  # conflict.rejected
        if isinstance(current, dict):
            self.open_fields(current.get("fields"))
        if data.get("field") == FIELD:  # conflict.resolved
            for side in ("winner", "overwritten"):
                if isinstance(data.get(side), dict):
                    data[side]["value"] = self.open_value(data[side].get("value"))
        return event

    def open_event_bytes(self, stored: bytes) -> bytes:
        """Stored event bytes as a reader gets them (unchanged when nothing is sealed)."""
        if PREFIX.encode() not in stored:
            return stored
        try:
            event = msgspec.json.decode(stored)
        except (msgspec.DecodeError, RecursionError):  # served as stored (or a placeholder)
            return stored
        if not isinstance(event, dict):
            return stored
        return msgspec.json.encode(self.open_event(event))

    def open_audit(self, details: dict[str, Any]) -> dict[str, Any]:
        """An ``entity_changed`` audit entry's details with a guest's contact opened."""
        if details.get("entity") == EntityKind.GUESTS.value:
            for side in ("before", "after"):
                self.open_fields(details.get(side))
        return details
