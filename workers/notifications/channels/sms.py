"""SMS through a Twilio-compatible REST API (``POST /2010-04-01/Accounts/{sid}/Messages.json``).

Any provider (or gateway in front of one) speaking that API works: the base URL is a
setting. The idempotency key travels as ``I-Twilio-Idempotency-Token`` and
``Idempotency-Key`` for providers that deduplicate on either."""

from __future__ import annotations

import httpx

from config.settings import NotifySettings
from workers.notifications.channels.base import NotConfigured, SendError, http_error


class SmsChannel:
    def __init__(self, settings: NotifySettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    @property
    def configured(self) -> bool:
        return self.settings.sms_base_url is not None

    async def send(self, *, key: str, to: str, text: str) -> str:
        s = self.settings
        if s.sms_base_url is None:
            raise NotConfigured("sms")
        url = f"{s.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{s.sms_account_sid}/Messages.json"
        try:
            r = await self.client.post(
                url,
                data={"To": to, "From": s.sms_from, "Body": text[:1600]},
                auth=(s.sms_account_sid, s.sms_auth_token),
                timeout=s.send_timeout,
                headers={"I-Twilio-Idempotency-Token": key, "Idempotency-Key": key},
            )
        except httpx.HTTPError as exc:
            raise SendError(f"SMS provider unavailable: {type(exc).__name__}") from None
        if r.status_code >= 300:
            raise http_error(r.status_code, "SMS provider")
        try:
            return str(r.json().get("sid") or "")
        except ValueError:
            return ""
