"""schemathesis against the OpenAPI document two real `wedsync api` processes serve, with
real auth: the couple of a real wedding (a user JWT), the admin token for `/api/admin`.

`schemathesis run` (its CLI, as anyone would run it in CI) generates requests for every
operation (examples, boundary values, then random valid and invalid data; a bounded number
per operation) and checks each response: no server error, a documented status, the
documented content type and schema. The wedding id is the real wedding's most of the time,
so the operations get past the membership check.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth import issue_token
from config.settings import Settings
from tests.kits.notifykit import VAPID_PEM
from tests.kits.world import World

pytestmark = pytest.mark.asyncio

#: generated cases per operation and phase: about 40 operations in well under a minute
MAX_EXAMPLES = 10

CHECKS = [
    # what the document promises: no 5xx, only documented statuses, bodies and headers
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    # and what a careful client relies on
    "negative_data_rejection",  # schema-invalid input is a 4xx
    "missing_required_header",
    "unsupported_method",  # 405 for a method a path does not have
    "ignored_auth",  # an operation that declares security refuses a request without it
    "use_after_free",
    "ensure_resource_availability",
    # not "positive_data_acceptance": the document is looser than the validation in places
    # (IANA time zones, `from` <= `to`, unknown fields refused), so a schema-valid request
    # can rightly get 422
]


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    # Web Push configured: `GET /api/notifications/push-key` answers 200, not 503
    return {"WEDSYNC_LOG_LEVEL": "ERROR", "WEDSYNC_VAPID_PRIVATE_KEY": VAPID_PEM}


def toml_value(value: Any) -> str:
    """A TOML value of strings, numbers, booleans, lists and inline tables (JSON string
    escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml(config: dict[str, Any]) -> str:
    """Top-level keys as ``key = value``; ``operations`` as an array of tables."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in config.items() if k != "operations"]
    for op in config.get("operations", []):
        lines.append("\n[[operations]]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in op.items()]
    return "\n".join(lines) + "\n"


def schemathesis_config(
    settings: Settings, base_url: str, wedding: str, other: str, members: list[str]
) -> dict[str, Any]:
    def bearer(user: str) -> dict[str, str]:
        token = issue_token(settings.auth, user, name="Schemathesis")
        return {"Authorization": f"Bearer {token}"}

    assert settings.auth.admin_token
    couple, guest = members
    return {
        "base-url": base_url,
        "seed": 20270612,
        "workers": 1,
        "request-timeout": 30,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "database": "none",
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False} | {c: {"enabled": True} for c in CHECKS},
        "dictionaries": {
            "weddings": {"values": [wedding]},
            "patched": {"values": [other]},
            "members": {"values": members},
        },
        "parameters": {
            "path.wedding_id": {"dictionary": "weddings", "probability": 0.9},
            "path.user_id": {"dictionary": "members", "probability": 0.5},
        },
        "headers": bearer(couple),
        "operations": [
            {
                # PATCH may cancel its wedding, which turns every later write on it into 409
                "include-path": "/api/weddings/{wedding_id}",
                "include-method": "PATCH",
                "parameters": {"path.wedding_id": {"dictionary": "patched", "probability": 0.9}},
            },
            {
                # the erase runs as a guest: the couple must stay to drive the rest
                "include-path": "/api/me",
                "include-method": "DELETE",
                "headers": bearer(guest),
            },
            {
                "include-path-regex": "^/api/admin/",
                "headers": {"Authorization": f"Bearer {settings.auth.admin_token}"},
            },
        ],
    }


async def test_every_operation_answers_as_its_openapi_document_says(
    settings: Settings, gateways: list[str], tmp_path: Path
) -> None:
    world = World(settings, gateways[0])
    await world.create()
    patched = World(settings, gateways[0])
    await patched.create()
    guest = await world.add("guest")
    config = schemathesis_config(
        settings, gateways[0], world.wedding, patched.wedding, [world.couple, guest]
    )
    (tmp_path / "schemathesis.toml").write_text(toml(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{gateways[0]}/schema/openapi.json",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "No issues found" in report or " passed" in report, report
    # it really tested the operations, with their real data
    async with httpx.AsyncClient(base_url=gateways[0]) as client:
        members = await client.get(
            f"/api/weddings/{world.wedding}/members", headers=world.auth(world.couple)
        )
    assert members.status_code == 200


async def test_the_document_declares_bearer_auth_and_error_bodies(gateways: list[str]) -> None:
    async with httpx.AsyncClient(base_url=gateways[0]) as client:
        raw = (await client.get("/schema/openapi.json")).json()
    schemes = raw["components"]["securitySchemes"]
    assert schemes["UserJWT"] | {"type": "http", "scheme": "bearer"} == schemes["UserJWT"]
    assert schemes["AdminToken"]["scheme"] == "bearer"
    join = raw["paths"]["/api/collaboration/join/{wedding_id}"]["post"]
    assert join["security"] == [{"UserJWT": []}]
    assert raw["paths"]["/api/admin/stats"]["get"]["security"] == [{"AdminToken": []}]
    assert "security" not in raw["paths"]["/healthz"]["get"]
    for status in ("401", "403", "404", "409", "422", "429", "503"):
        body = join["responses"][status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}, status
    assert raw["components"]["schemas"]["ErrorBody"]["required"] == ["code", "message"]
    readyz = raw["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]
    assert readyz["schema"] == {"$ref": "#/components/schemas/Readiness"}
