"""Real local servers standing where the notification providers stand in production:
an SMTP server (aiosmtpd), a Twilio-compatible SMS API, a webhook receiver and a Web Push
service that decrypts what it receives with the subscribing browser's private key."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import json
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import http_ece
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wedsync.embedded.process import free_port


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Mail:
    to: list[str]
    message: EmailMessage

    @property
    def key(self) -> str:
        return str(self.message["X-Wedsync-Key"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


class SmtpServer:
    """aiosmtpd on a free port, in its own thread (as the library runs it). ``delay``:
    seconds the server takes over each message before recording and accepting it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.port = free_port()
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        assert isinstance(envelope.content, bytes)  # aiosmtpd decodes only with decode_data=True
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.mails.append(Mail(list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Mail]:
        with self._lock:
            return [m for m in self.mails if address in m.to]

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)


class HttpProviders:
    """One aiohttp server playing the SMS API, webhook receivers and a push service.

    ``fail_webhooks`` makes webhook receivers answer 500 (the request is still recorded).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sms: list[Recorded] = []
        self.webhooks: list[Recorded] = []
        self.pushes: list[Recorded] = []
        self.fail_webhooks = False
        self.gone_push: set[str] = set()  # subscription names answering 410
        self._runner: web.AppRunner | None = None

    async def _sms(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.sms.append(Recorded(request.path, dict(request.headers), b"", form))
        return web.json_response(
            {"sid": "SM" + os.urandom(8).hex(), "status": "queued"}, status=201
        )

    async def _webhook(self, request: web.Request) -> web.Response:
        self.webhooks.append(Recorded(request.path, dict(request.headers), await request.read()))
        return web.Response(status=500 if self.fail_webhooks else 204)

    async def _push(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.pushes.append(Recorded(request.path, dict(request.headers), await request.read()))
        return web.Response(status=410 if name in self.gone_push else 201)

    async def __aenter__(self) -> HttpProviders:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._sms)
        app.router.add_post("/hooks/{name}", self._webhook)
        app.router.add_post("/push/{name}", self._push)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def sms_to(self, phone: str) -> list[Recorded]:
        return [r for r in self.sms if r.form.get("To") == phone]


class Browser:
    """A Web Push subscriber: its keys, and decryption of what the push service got."""

    def __init__(self, providers: HttpProviders, name: str) -> None:
        self.name = name
        self.endpoint = f"{providers.base}/push/{name}"
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._auth = os.urandom(16)
        self.providers = providers

    def subscription(self) -> dict[str, Any]:
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self._auth)},
        }

    def received(self) -> list[dict[str, Any]]:
        out = []
        for r in self.providers.pushes:
            if r.path == f"/push/{self.name}":
                plain = http_ece.decrypt(
                    r.body, private_key=self._key, auth_secret=self._auth, version="aes128gcm"
                )
                out.append(json.loads(plain))
        return out


@contextlib.asynccontextmanager
async def providers() -> AsyncIterator[tuple[SmtpServer, HttpProviders]]:
    with SmtpServer() as smtp:
        async with HttpProviders() as http:
            yield smtp, http


def provider_env(smtp: SmtpServer, http: HttpProviders) -> dict[str, str]:
    """Environment pointing a worker process at these servers."""
    return {
        "WEDSYNC_SMTP_HOST": "127.0.0.1",
        "WEDSYNC_SMTP_PORT": str(smtp.port),
        "WEDSYNC_SMTP_STARTTLS": "false",
        "WEDSYNC_SMS_BASE_URL": http.base,
        "WEDSYNC_SMS_ACCOUNT_SID": "AC123",
        "WEDSYNC_SMS_AUTH_TOKEN": "token",
        "WEDSYNC_SMS_FROM": "+15550000000",
    }
