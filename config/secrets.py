"""Development secrets: generated once in the data dir when none are configured.

So that `wedsync dev`, `wedsync token`, `wedsync admin-token` and `wedsync metrics-token`
agree across restarts without any setup; `wedsync dev` hands them to its children in their
environment. Only `wedsync dev` (or a printing command given `--new-secret`) creates them:
`token`, `admin-token` and `metrics-token` only read them (``printed_secret``), refusing
rather than inventing one no running server knows (run outside the dev data dir, they did,
and the API then refused what they printed). Everywhere else (`wedsync api`) nothing is generated:
WEDSYNC_JWT_SECRET (or a public key / JWKS URL), WEDSYNC_DATA_KEY and WEDSYNC_ADMIN_TOKEN
must be set (``missing_secrets``), or the process refuses to start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from config.settings import Settings

log = logging.getLogger(__name__)

FILE = "secrets.json"


def with_dev_secrets(settings: Settings) -> Settings:
    auth = settings.auth
    needs_jwt = auth.jwt_secret is None and not (auth.jwt_public_key or auth.jwks_url)
    needs_vapid = settings.notify.vapid_private_key is None
    needs_admin = auth.admin_token is None
    needs_metrics = auth.metrics_token is None
    if not (needs_jwt or auth.data_key is None or needs_vapid or needs_admin or needs_metrics):
        return settings
    path = settings.data_dir / FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    if "jwt_secret" not in stored:
        stored["jwt_secret"] = secrets.token_urlsafe(48)
        changed = True
    if "data_key" not in stored:
        stored["data_key"] = Fernet.generate_key().decode()
        changed = True
    if "admin_token" not in stored:
        stored["admin_token"] = secrets.token_urlsafe(32)
        changed = True
    if "metrics_token" not in stored:
        stored["metrics_token"] = secrets.token_urlsafe(32)
        changed = True
    if "vapid_private_key" not in stored:
        key = ec.generate_private_key(ec.SECP256R1())
        stored["vapid_private_key"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
        log.warning("generated development secrets in %s", path)
    notify = settings.notify
    return dataclasses.replace(
        settings,
        notify=dataclasses.replace(
            notify, vapid_private_key=notify.vapid_private_key or stored["vapid_private_key"]
        ),
        auth=dataclasses.replace(
            auth,
            jwt_secret=stored["jwt_secret"] if needs_jwt else auth.jwt_secret,
            data_key=auth.data_key or stored["data_key"],
            admin_token=auth.admin_token or stored["admin_token"],
            metrics_token=auth.metrics_token or stored["metrics_token"],
        ),
    )


#: what each printing command prints (or signs with): its key in the data dir's file, its
#: variable and what to call it
PRINTED = {
    "token": ("jwt_secret", "WEDSYNC_JWT_SECRET", "JWT secret"),
    "admin-token": ("admin_token", "WEDSYNC_ADMIN_TOKEN", "admin token"),
    "metrics-token": ("metrics_token", "WEDSYNC_METRICS_TOKEN", "metrics token"),
}


class UnknownDevSecret(RuntimeError):
    """The secret a printing command needs is neither configured nor in the data dir."""


def printed_secret(settings: Settings, command: str) -> str:
    """The secret ``wedsync COMMAND`` prints or signs with: configured, else the data dir's.
    Reads only: a secret generated here would be one no running server knows, so
    ``UnknownDevSecret`` (saying where it looked and what to do) instead."""
    key, variable, what = PRINTED[command]
    configured: str | None = getattr(settings.auth, key)
    if configured:
        return configured
    path = (settings.data_dir / FILE).resolve()
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if stored.get(key):
        return stored[key]
    raise UnknownDevSecret(
        f"{variable} is unset and {path} holds no {what}: one made up now would be known to "
        'no running server, which would refuse what this prints (a JWT: 401 "Signature '
        'verification failed").\n'
        "Run it in the directory `wedsync dev` runs in (its data dir is ./.wedsync), or set "
        f"WEDSYNC_DATA_DIR to that data dir, or {variable} to the server's value; or pass "
        f"--new-secret to create development secrets in {path.parent} for a `wedsync dev` "
        "started with that data dir later."
    )


def missing_secrets(settings: Settings) -> list[str]:
    """The secrets an API process cannot run without, by variable, that are not set."""
    auth = settings.auth
    missing = []
    if not (auth.jwt_secret or auth.jwt_public_key or auth.jwks_url):
        missing.append(
            "WEDSYNC_JWT_SECRET (or WEDSYNC_JWT_PUBLIC_KEY or WEDSYNC_JWKS_URL): verifies user JWTs"
        )
    if not auth.data_key:
        missing.append("WEDSYNC_DATA_KEY: encrypts contact details at rest")
    if not auth.admin_token:
        missing.append("WEDSYNC_ADMIN_TOKEN: the admin API's and /metrics' bearer token")
    return missing


class MissingSecrets(RuntimeError):
    """Raised (with every missing variable named) instead of generating production secrets."""

    def __init__(self, missing: list[str]) -> None:
        lines = "\n".join(f"  - {m}" for m in missing)
        super().__init__(
            f"refusing to start without these settings:\n{lines}\n"
            "(`wedsync dev` generates development values; docs/security.md says how to make "
            "production ones)"
        )
        self.missing = missing


def require_secrets(settings: Settings) -> Settings:
    """``settings`` if every required secret is set; ``MissingSecrets`` otherwise."""
    if missing := missing_secrets(settings):
        raise MissingSecrets(missing)
    return settings
