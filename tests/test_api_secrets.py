"""What `wedsync api` refuses to start without, and the token `/metrics` needs."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from config.settings import Settings
from wedsync.embedded.process import free_port

pytestmark = pytest.mark.asyncio

ALL_SECRETS = {
    "WEDSYNC_JWT_SECRET": secrets.token_urlsafe(32),
    "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
    "WEDSYNC_ADMIN_TOKEN": secrets.token_urlsafe(32),
}


async def api_start(settings: Settings, data_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    """`wedsync api` on the session's services with only ``env``'s secrets: (exit, stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    assert settings.nats.url and settings.database.url
    full = base | {
        "WEDSYNC_DATA_DIR": str(data_dir),
        "WEDSYNC_NATS_URL": settings.nats.url,
        "WEDSYNC_DATABASE_URL": settings.database.url,
        "WEDSYNC_PORT": str(free_port()),
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wedsync.cli",
        "api",
        env=full,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_api_refuses_to_start_without_its_secrets_naming_each(
    settings: Settings, tmp_path: Path
) -> None:
    code, err = await api_start(settings, tmp_path / "data", {})
    assert code == 2
    assert "wedsync api: refusing to start without these settings" in err
    for name in ("WEDSYNC_JWT_SECRET", "WEDSYNC_DATA_KEY", "WEDSYNC_ADMIN_TOKEN"):
        assert name in err
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "secrets.json").exists()  # nothing was generated


async def test_api_names_only_what_is_missing(settings: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in ALL_SECRETS.items() if k != "WEDSYNC_ADMIN_TOKEN"}
    code, err = await api_start(settings, tmp_path / "data", env)
    assert code == 2
    assert "WEDSYNC_ADMIN_TOKEN" in err
    assert "WEDSYNC_DATA_KEY" not in err and "WEDSYNC_JWT_SECRET" not in err


async def test_a_jwks_url_stands_in_for_the_jwt_secret(settings: Settings, tmp_path: Path) -> None:
    env = {"WEDSYNC_ADMIN_TOKEN": "t" * 40, "WEDSYNC_JWKS_URL": "http://127.0.0.1:9/jwks.json"}
    code, err = await api_start(settings, tmp_path / "data", env)
    assert code == 2
    assert "WEDSYNC_DATA_KEY" in err and "WEDSYNC_JWT_SECRET" not in err


async def test_a_malformed_trusted_proxy_is_refused(settings: Settings, tmp_path: Path) -> None:
    env = ALL_SECRETS | {"WEDSYNC_TRUSTED_PROXIES": "10.0.0.1, not-an-address"}
    code, err = await api_start(settings, tmp_path / "data", env)
    assert code == 2
    assert "WEDSYNC_TRUSTED_PROXIES: 'not-an-address' is not an IP address or network" in err


async def test_metrics_need_the_metrics_or_the_admin_token(
    settings: Settings, gateways: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=gateways[0]) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        r = await client.get("/metrics", headers=wrong)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        for token in (settings.auth.metrics_token, settings.auth.admin_token):
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "wedsync_" in r.text
