"""schemathesis against the OpenAPI document two real `wedsync api` processes serve, with
real auth: the couple of a real wedding (a user JWT), the admin token for `/api/admin`.

Every operation gets generated requests (valid and invalid, bounded per operation); each
response must be no server error, carry a documented status, and match the documented
schema and content type. The wedding id is the real wedding's most of the time, so the
operations run past the membership check.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import pytest_asyncio
import schemathesis
from schemathesis import Case

from app.auth import issue_token
from config.settings import Settings
from tests.world import World

#: examples per operation and phase: about 40 operations in well under a minute
MAX_EXAMPLES = 12

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return {"WEDSYNC_LOG_LEVEL": "ERROR"}


@pytest_asyncio.fixture(scope="module")
async def openapi_config(settings: Settings, gateways: list[str]) -> dict[str, Any]:
    """A wedding whose couple drives the API; another one only for PATCH (which may cancel
    it and so turn every later write on it into 409); a guest who may be erased."""
    world = World(settings, gateways[0])
    await world.create()
    patched = World(settings, gateways[0])
    await patched.create()
    eraser = await world.add("guest")
    wedding, other = world.wedding, patched.wedding
    assert settings.auth.admin_token

    def bearer(user: str) -> str:
        return issue_token(settings.auth, user, name="Schemathesis")

    checks: dict[str, Any] = {"enabled": False} | {c: {"enabled": True} for c in CHECKS}
    return {
        "base-url": gateways[0],
        "seed": 20270612,
        "request-timeout": 30,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            # TODO(validation branch): NUL characters in strings are answered with 500
            # today (issue 22 point 8); allow them again once that branch merges.
            "allow-x00": False,
        },
        "checks": checks,
        "dictionaries": {
            "weddings": {"values": [wedding]},
            "patched": {"values": [other]},
            "members": {"values": [world.couple, eraser]},
        },
        "parameters": {
            "path.wedding_id": {"dictionary": "weddings", "probability": 0.9},
            "path.user_id": {"dictionary": "members", "probability": 0.5},
        },
        "operations": [
            {
                "include-path": "/api/weddings/{wedding_id}",
                "include-method": "PATCH",
                "parameters": {"path.wedding_id": {"dictionary": "patched", "probability": 0.9}},
            },
        ],
        # not schemathesis settings: the bearer token each operation is called with
        "x-tokens": {
            "UserJWT": bearer(world.couple),
            "AdminToken": settings.auth.admin_token,
            "eraser": bearer(eraser),
        },
    }


@pytest.fixture(scope="module")
def api_schema(openapi_config: dict[str, Any]) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {k: v for k, v in openapi_config.items() if not k.startswith("x-")}
    )
    url = openapi_config["base-url"] + "/schema/openapi.json"
    return schemathesis.openapi.from_url(url, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def token_for(case: Case, tokens: dict[str, str]) -> str | None:
    """The couple's JWT for user operations (a guest's for the erase: the couple must
    stay), the admin token for the admin API, none where the document asks for none."""
    if case.method == "DELETE" and case.path == "/api/me":
        return tokens["eraser"]
    for requirement in case.operation.definition.raw.get("security", []):
        for name in requirement:
            return tokens[name]
    return None


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_answers_as_documented(
    case: Case, openapi_config: dict[str, Any]
) -> None:
    if (token := token_for(case, openapi_config["x-tokens"])) is not None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    case.call_and_validate()


def test_the_document_declares_bearer_auth_and_error_bodies(
    api_schema: schemathesis.BaseSchema,
) -> None:
    raw = api_schema.raw_schema
    schemes = raw["components"]["securitySchemes"]
    assert schemes["UserJWT"] == {**schemes["UserJWT"], "type": "http", "scheme": "bearer"}
    assert schemes["AdminToken"]["scheme"] == "bearer"
    join = raw["paths"]["/api/collaboration/join/{wedding_id}"]["post"]
    assert join["security"] == [{"UserJWT": []}]
    assert raw["paths"]["/api/admin/stats"]["get"]["security"] == [{"AdminToken": []}]
    assert "security" not in raw["paths"]["/healthz"]["get"]
    for status in ("401", "403", "404", "409", "422", "429", "503"):
        body = join["responses"][status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}, status
    assert raw["components"]["schemas"]["ErrorBody"]["required"] == ["code", "message"]
