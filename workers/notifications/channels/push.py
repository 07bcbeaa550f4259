"""Web Push with VAPID (pywebpush): the payload is encrypted for the browser (aes128gcm).

A push service answering 404/410 means the subscription is gone: the caller deletes it.
The ``Topic`` header (from the idempotency key) lets a push service replace an undelivered
copy of the same notice rather than show it twice."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import aiohttp
from py_vapid import Vapid
from pywebpush import WebPushException, webpush_async

from config.settings import NotifySettings
from workers.notifications.channels.base import NotConfigured, SendError, http_error


def topic(key: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()[:24]).decode()


class PushChannel:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        pem = settings.vapid_private_key
        self._vapid = Vapid.from_pem(pem.encode()) if pem else None
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        return self._vapid is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, *, key: str, endpoint: str, p256dh: str, auth: str, payload: dict[str, Any]
    ) -> str:
        if self._vapid is None:
            raise NotConfigured("push")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await webpush_async(
                {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}},
                data=json.dumps(payload),
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self.settings.vapid_subject},
                ttl=24 * 3600,
                headers={"Topic": topic(key), "Urgency": "high"},
                timeout=aiohttp.ClientTimeout(total=self.settings.send_timeout),
                aiohttp_session=self._session,
            )
        except WebPushException as exc:
            status = exc.response.status if exc.response is not None else 0
            raise http_error(int(status or 502), "push service") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SendError(f"push service unavailable: {type(exc).__name__}") from None
        return topic(key)
