"""Field-level encryption of contact details (Fernet from ``cryptography``).

Several keys may be configured, newest first: new values use the first, old ones still
decrypt (MultiFernet), so keys can be rotated without a migration. :meth:`derived` gives
a cipher for another purpose (guest-list contacts) from the same keys through HKDF, so a
value sealed for one purpose never opens as another (no oracle across purposes).

Also the two keys the edge hands out and the notification channels use: a webhook's signing
secret (Standard Webhooks' ``whsec_`` form) and the VAPID public key browsers subscribe with.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from py_vapid import Vapid


def _derive(key: str, purpose: str) -> str:
    raw = base64.urlsafe_b64decode(key.encode())
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return base64.urlsafe_b64encode(hkdf.derive(raw)).decode()


class ContactCipher:
    def __init__(self, keys: str) -> None:
        self._keys = [k.strip() for k in keys.split(",") if k.strip()]
        self._f = MultiFernet([Fernet(k.encode()) for k in self._keys])

    def seal(self, value: str | None) -> bytes | None:
        return None if value is None else self._f.encrypt(value.encode())

    def open(self, token: bytes | None) -> str | None:
        return None if token is None else self._f.decrypt(bytes(token)).decode()

    def derived(self, purpose: str) -> ContactCipher:
        """A cipher with keys derived for ``purpose`` (rotation works the same way)."""
        return ContactCipher(",".join(_derive(k, purpose) for k in self._keys))


def new_secret() -> str:
    """A webhook signing secret, as Standard Webhooks writes them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def public_key(pem: str) -> str:
    """The VAPID public key as browsers take it (``applicationServerKey``): base64url of
    the uncompressed P-256 point."""
    key = Vapid.from_pem(pem.encode()).public_key
    raw = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
