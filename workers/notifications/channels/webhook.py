"""Webhooks signed per the Standard Webhooks spec (the ``standardwebhooks`` library).

``webhook-id`` is the delivery's idempotency key: the spec asks receivers to deduplicate
on it, so a retry (or a re-send after a crash mid-call) is recognisably the same message."""

from __future__ import annotations

import datetime as dt

import httpx
from standardwebhooks.webhooks import Webhook

from config.settings import NotifySettings
from runtime.destination import REFUSED, GuardedTransport, refused
from workers.notifications.channels.base import SendError


def signed_headers(secret: str, msg_id: str, at: dt.datetime, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, at, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "wedsync-webhooks/1",
    }


def webhook_client(settings: NotifySettings) -> httpx.AsyncClient:
    """The HTTP client of webhook sends: connects to public addresses only (unless
    ``WEBHOOK_ALLOW_PRIVATE``), checked at connect time against what it connects to."""
    transport = GuardedTransport(settings.webhook_allow_private)
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)


class WebhookChannel:
    def __init__(self, settings: NotifySettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client  # from webhook_client(): the destination guard is in it

    async def send(self, *, key: str, url: str, secret: str, body: str) -> str:
        # the signature's timestamp is the real time of sending (receivers check it)
        at = dt.datetime.now(dt.UTC)
        try:
            r = await self.client.post(
                url,
                content=body.encode(),
                timeout=self.settings.send_timeout,
                headers=signed_headers(secret, key, at, body),
            )
        except httpx.HTTPError as exc:
            if refused(exc):  # the same words whatever the address and whatever listens
                raise SendError(REFUSED, permanent=True) from None
            raise SendError(f"endpoint unreachable: {type(exc).__name__}") from None
        if not 200 <= r.status_code < 300:
            # a webhook endpoint answering 4xx may be fixed later: always retried
            raise SendError(f"endpoint answered HTTP {r.status_code}")
        return str(r.status_code)
