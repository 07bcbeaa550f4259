"""Pages on other origins (issue 18): CORS on the HTTP API and the WebSocket ``Origin``
check, against real `wedsync api` processes configured with one allowed origin
(``WEDSYNC_CORS_ORIGINS``, docs/security.md)."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.typing import Origin

from tests.kits.world import World, recv_type, subprotocols, ws_url

ALLOWED = "https://planner.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture(scope="module")
def gateway_env() -> dict[str, str]:
    return {"WEDSYNC_CORS_ORIGINS": f"{ALLOWED},http://localhost:5173"}


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }


async def test_a_configured_origin_may_call_the_api(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        pre = await c.options("/api/weddings", headers=preflight(ALLOWED))
        assert pre.status_code in (200, 204), pre.text
        assert pre.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in pre.headers["access-control-allow-methods"]
        allowed_headers = pre.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers

        body = {"name": "From the planner app", "date": "2027-06-12", "timezone": "UTC"}
        r = await c.post(
            "/api/weddings", json=body, headers={"Origin": ALLOWED, **world.auth(world.couple)}
        )
        assert r.status_code == 201, r.text
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-credentials" not in r.headers  # bearer tokens only


async def test_an_unlisted_origin_gets_no_cors_headers(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        pre = await c.options("/api/weddings", headers=preflight(OTHER))
        assert "access-control-allow-origin" not in pre.headers
        # a browser would send the request only after a good preflight; sent anyway, the
        # answer carries nothing that lets the page read it
        r = await c.get(
            f"/api/weddings/{world.wedding}", headers={"Origin": OTHER, **world.auth(world.couple)}
        )
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


async def test_a_websocket_from_an_unlisted_origin_is_refused(world: World) -> None:
    token = await world.join(world.couple)
    url = ws_url(world.base, world.wedding)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, subprotocols=subprotocols(token), origin=Origin(OTHER)):
            pass
    assert refused.value.response.status_code == 403
    # the refusal spent nothing: the same token still opens sockets from allowed pages
    # listed, the API's own, no Origin (not a browser)
    for origin in (Origin(ALLOWED), Origin(world.base), None):
        async with websockets.connect(url, subprotocols=subprotocols(token), origin=origin) as ws:
            welcome = await recv_type(ws, "welcome")
            assert welcome["user_id"] == world.couple
