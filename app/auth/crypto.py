"""Field-level encryption of contact details (Fernet from ``cryptography``).

Several keys may be configured, newest first: new values use the first, old ones still
decrypt (MultiFernet), so keys can be rotated without a migration.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet


class ContactCipher:
    def __init__(self, keys: str) -> None:
        self._f = MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])

    def seal(self, value: str | None) -> bytes | None:
        return None if value is None else self._f.encrypt(value.encode())

    def open(self, token: bytes | None) -> str | None:
        return None if token is None else self._f.decrypt(bytes(token)).decode()
