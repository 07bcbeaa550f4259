"""Email over SMTP (aiosmtplib): STARTTLS and login from settings, one connection per send.

The delivery's idempotency key becomes the Message-ID, so a copy re-sent after a crash in
the middle of a send is recognisably the same message (mailbox providers drop it)."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage

import aiosmtplib

from config.settings import NotifySettings
from workers.notifications.channels.base import NotConfigured, SendError


def message_id(key: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@wedsync>"


class EmailChannel:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    @property
    def configured(self) -> bool:
        return self.settings.smtp_host is not None

    async def send(self, *, key: str, to: str, subject: str, text: str) -> str:
        s = self.settings
        if s.smtp_host is None:
            raise NotConfigured("email")
        msg = EmailMessage()
        msg["From"] = s.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = message_id(key)
        msg["X-Wedsync-Key"] = key
        msg.set_content(text)
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.smtp_host,
                port=s.smtp_port,
                start_tls=s.smtp_starttls,
                username=s.smtp_username,
                password=s.smtp_password,
                timeout=s.send_timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise SendError(f"recipient refused: {_codes(exc)}", permanent=True) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(f"SMTP {exc.code}", permanent=500 <= exc.code < 600) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"SMTP unavailable: {type(exc).__name__}") from None
        return str(msg["Message-ID"])


def _codes(exc: aiosmtplib.SMTPRecipientsRefused) -> str:
    # never the address itself: only the server's codes
    return ",".join(str(r.code) for r in exc.recipients) or "?"
