"""Input that can never be stored is refused at the edge, before the ack (issue 17 point 3;
issue 22 findings 5, 8 and 9), over WebSocket and HTTP against two real gateway processes;
and what older versions already stored does not break the readers."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import websockets
from litestar import get
from litestar.testing import AsyncTestClient
from nats.js.errors import NotFoundError
from websockets.asyncio.client import ClientConnection

from app.auth.tokens import issue_token
from app.factory import create_app
from app.privacy.scan import scan
from config.settings import Settings
from runtime.connections import Connections
from streams.definitions import CHANGES, EVENTS
from streams.subjects import CHANGES_ROOT, wedding_subject, wedding_wildcard
from tests.kits.world import World, connect, recv, send

pytestmark = pytest.mark.asyncio

INT64_MAX = 2**63 - 1


# -- helpers -----------------------------------------------------------------------------


async def answers(ws: ClientConnection, raw: str | bytes) -> list[dict[str, Any]]:
    """Send one raw frame, then a ping: the acks and errors the server sent before the pong
    (frames are handled in order, so those are its answer to the raw frame)."""
    await ws.send(raw)
    await send(ws, type="ping")
    out: list[dict[str, Any]] = []
    while True:
        f = await recv(ws)
        if f["type"] == "pong":
            return out
        if f["type"] in ("ack", "error"):
            out.append(f)


async def refused(ws: ClientConnection, raw: str | bytes, code: str = "invalid") -> str:
    """The one error the frame got (no ack): its message."""
    got = await answers(ws, raw)
    assert [f["type"] for f in got] == ["error"], got
    assert got[0]["code"] == code, got
    message: str = got[0]["message"]
    return message


async def acked(ws: ClientConnection, raw: str) -> int:
    got = await answers(ws, raw)
    assert [f["type"] for f in got] == ["ack"], got
    seq: int = got[0]["seq"]
    return seq


def message(mid: str, data_json: str) -> str:
    """A chat message frame whose ``data`` is the given JSON text, verbatim."""
    return f'{{"type":"message","id":"{mid}","channel":"chat","data":{data_json}}}'


def nested(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


async def couple_socket(world: World, gateways: list[str]) -> ClientConnection:
    ws = await connect(gateways[0], world.wedding, await world.join(world.couple))
    assert (await recv(ws))["type"] == "welcome"
    return ws


async def history(base: str, world: World) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(world.couple),
            params={"limit": 1000},
        )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def assert_invalid(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == "invalid" and set(body) == {"code", "message"}, body
    for w in words:
        assert w in body["message"], body


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.auth.admin_token}"}


# -- WebSocket: refused before the ack ---------------------------------------------------


async def test_a_change_with_a_nul_in_a_text_field_is_refused_before_the_ack(
    world: World, gateways: list[str], conns: Connections
) -> None:
    ws = await couple_socket(world, gateways)
    try:
        bad = (
            '{"type":"change","id":"g1","entity":"guests","entity_id":"g-1","op":"create",'
            '"fields":{"name":"Ann\\u0000e"}}'
        )
        got = await answers(ws, bad)
        assert got == [
            {
                "type": "error",
                "id": "g1",  # well-formed: the refusal names the frame
                "code": "invalid",
                "message": "NUL character in a string at $.fields.name",
            }
        ]
        # nothing of this wedding reached the changes stream (a worker could never apply it)
        with pytest.raises(NotFoundError):
            await conns.js.get_msg(
                CHANGES.name, seq=1, next=True, subject=f"{CHANGES_ROOT}.*.{world.wedding}"
            )
        assert await acked(ws, bad.replace("\\u0000", ""))  # the socket goes on working
    finally:
        await ws.close()


async def test_nul_and_lone_surrogates_anywhere_in_a_frame_are_refused(
    world: World, gateways: list[str]
) -> None:
    ws = await couple_socket(world, gateways)
    try:
        for raw, where in [
            (message("m1", '{"text":"a\\u0000b"}'), "NUL character in a string at $.data.text"),
            (message("m2", '{"te\\u0000xt":"ab"}'), "(an object key) at $.data['te\\x00xt']"),
            (message("m3", '{"list":["ok",{"deep":"\\u0000"}]}'), "at $.data.list[1].deep"),
            (message("a\\u0000b", '{"text":"x"}'), "NUL character in a string at $.id"),
            ('{"type":"presence","location":"hall\\u0000"}', "at $.location"),
            (message("m4", '{"text":"\\ud800"}'), "surrogate"),
            (message("m5", '{"text":"x\\udc00y"}'), "surrogate"),
            (message("m6", '{"text":"\\ud800\\u0041"}'), "surrogate"),
        ]:
            assert where in await refused(ws, raw), raw
        # a surrogate *pair* is a character like any other
        seq = await acked(ws, message("m7", '{"text":"\\ud83d\\ude00"}'))
        stored = await history(gateways[1], world)
        assert [(e["seq"], e["event"]["data"]) for e in stored] == [(seq, {"text": "😀"})]
    finally:
        await ws.close()


async def test_nesting_deeper_than_32_levels_or_over_10000_values_is_refused(
    world: World, gateways: list[str]
) -> None:
    ws = await couple_socket(world, gateways)
    try:
        # the frame is level 1, data level 2: data may hold 30 more levels of arrays
        ok = await acked(ws, message("d31", f'{{"n":{nested(30)}}}'))
        assert "nested deeper than 32 levels at $.data.n[0]" in await refused(
            ws, message("d32", f'{{"n":{nested(31)}}}')
        )
        # deeper than the decoder itself goes (~1 000): refused alike, the socket stays up
        assert "nested too deeply" in await refused(ws, message("d5k", f'{{"n":{nested(5000)}}}'))
        many = "[" + ",".join(["0"] * 10_000) + "]"
        assert "more than 10000 values" in await refused(ws, message("v10k", f'{{"n":{many}}}'))
        fits = "[" + ",".join(["0"] * 9_990) + "]"
        assert await acked(ws, message("v9990", f'{{"n":{fits}}}')) > ok
    finally:
        await ws.close()


async def test_numbers_outside_int64_or_their_schema_are_refused(
    world: World, gateways: list[str]
) -> None:
    ws = await couple_socket(world, gateways)
    try:
        for raw, why in [
            (message("i1", f'{{"n":{INT64_MAX + 1}}}'), "integer outside int64 at $.data.n"),
            (message("i2", f'{{"n":[{-INT64_MAX - 2}]}}'), "integer outside int64 at $.data.n[0]"),
            (message("i3", f'{{"n":{10**40}}}'), "integer outside int64"),
            (message("f1", '{"n":1e400}'), "out of range"),
            (message("f2", '{"n":NaN}'), "malformed"),
            (
                '{"type":"change","id":"c1","entity":"guests","entity_id":"g","op":"update",'
                f'"base_version":{INT64_MAX + 1},"fields":{{"name":"x"}}}}',
                "$.base_version",
            ),
            (f'{{"type":"resume","after_seq":{2**64}}}', "$.after_seq"),
        ]:
            assert why in await refused(ws, raw), raw
        seq = await acked(ws, message("i4", f'{{"n":{INT64_MAX},"m":{-INT64_MAX - 1}}}'))
        (event,) = [e for e in await history(gateways[0], world) if e["seq"] == seq]
        assert event["event"]["data"] == {"n": INT64_MAX, "m": -INT64_MAX - 1}
    finally:
        await ws.close()


async def test_the_frame_limit_counts_bytes_not_characters(
    world: World, gateways: list[str]
) -> None:
    limit = world.settings.gateway.max_frame  # 65536, the default
    ws = await couple_socket(world, gateways)

    def frame(mid: str, text: str) -> str:
        return message(mid, json.dumps({"text": text}, ensure_ascii=False))

    def sized(mid: str, char: str, size: int) -> str:
        """A frame of exactly ``size`` bytes of UTF-8, its text made of ``char``."""
        overhead = len(frame(mid, "").encode())
        count, rest = divmod(size - overhead, len(char.encode()))
        return frame(mid, char * count + "x" * rest)

    try:
        # 17 000 emoji: 17 000 characters but 68 000 bytes (the old check counted characters)
        assert len(frame("e1", "😀" * 17_000)) < limit
        assert "over 65536 bytes" in await refused(ws, frame("e1", "😀" * 17_000), "too_large")
        for mid, char in [("a", "x"), ("b", "é"), ("c", "€"), ("d", "😀")]:
            exact = sized(mid, char, limit)
            assert len(exact.encode()) == limit
            seq = await acked(ws, exact)
            over = sized(mid + "+", char, limit + 1)
            assert "over 65536 bytes" in await refused(ws, over, "too_large")
        (event,) = [e for e in await history(gateways[1], world) if e["seq"] == seq]
        assert event["event"]["data"]["text"].startswith("😀" * 16_000)
    finally:
        await ws.close()


async def test_an_after_seq_of_non_ascii_digits_connects_live(
    world: World, gateways: list[str]
) -> None:
    """``"²".isdigit()`` is true, but ``int("²")`` fails: that closed the socket with 4002."""
    token = await world.join(world.couple)
    base = gateways[0].replace("http", "ws")
    url = f"{base}/ws/weddings/{world.wedding}?token={token}&after_seq=%C2%B2"
    async with websockets.connect(url) as ws:
        assert (await recv(ws))["type"] == "welcome"
        assert await acked(ws, message("live", '{"text":"hi"}'))


# -- HTTP: clear 4xx, never a 500 --------------------------------------------------------


async def test_nul_in_any_http_string_is_refused_with_invalid(
    world: World, gateways: list[str], settings: Settings
) -> None:
    w, couple = world.wedding, world.auth(world.couple)
    member = await world.add("guest")
    keys = {
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQ",
        "auth": "tBHItJI5svbpez7KI4CCXg",
    }
    cases: list[tuple[str, str, dict[str, str], Any, str]] = [
        (
            "POST",
            "/api/weddings",
            couple,
            {"name": "Ada\u0000Bea", "date": "2031-06-21", "timezone": "UTC"},
            "at $.name",
        ),
        ("PATCH", f"/api/weddings/{w}", couple, {"name": "\u0000"}, "at $.name"),
        (
            "PUT",
            f"/api/weddings/{w}/members/{member}",
            couple,
            {"role": "guest", "display_name": "Bo\u0000b"},
            "at $.display_name",
        ),
        ("PUT", f"/api/weddings/{w}/members/x%00y", couple, {"role": "guest"}, "path parameter"),
        ("DELETE", f"/api/weddings/{w}/members/{member}%00", couple, None, "path parameter"),
        (
            "POST",
            f"/api/weddings/{w}/webhooks",
            couple,
            {"url": "https://hooks.example.org/\u0000"},
            "at $.url",
        ),
        (
            "POST",
            "/api/notifications/push-subscriptions",
            couple,
            {"endpoint": "https://push.example.org/\u0000", "keys": keys},
            "at $.endpoint",
        ),
        (
            "POST",
            f"/api/admin/weddings/{w}/events",
            admin(settings),
            {"channel": "chat", "type": "announcement", "data": {"k\u0000": 1}},
            "object key",
        ),
        (
            "POST",
            f"/api/admin/weddings/{w}/users/u%00/disconnect",
            admin(settings),
            None,
            "path parameter",
        ),
        ("GET", f"/api/weddings/{w}/events?after_seq=0&x=%00", couple, None, "query parameter"),
    ]
    async with httpx.AsyncClient(base_url=gateways[1]) as c:
        for method, path, headers, body, where in cases:
            r = await c.request(method, path, headers=headers, json=body)
            assert_invalid(r, "NUL character", where)
        # nothing was changed: the member keeps no display name, x\0y was never added
        r = await c.get(f"/api/weddings/{w}/members", headers=couple)
        assert {m["user_id"]: m["display_name"] for m in r.json()} == {
            world.couple: None,
            member: None,
        }
        r = await c.get(f"/api/weddings/{w}", headers=couple)
        assert r.status_code == 200 and r.json()["name"] == "W"


async def test_integers_beyond_int64_in_query_parameters_are_refused_with_invalid(
    world: World, gateways: list[str], settings: Settings
) -> None:
    w, couple = world.wedding, world.auth(world.couple)
    async with httpx.AsyncClient(base_url=gateways[0]) as c:
        for path, param in [
            ("/api/notifications", "offset"),
            (f"/api/weddings/{w}/audit", "before"),
            (f"/api/weddings/{w}/notifications/deliveries", "before"),
            (f"/api/weddings/{w}/events", "after_seq"),
        ]:
            r = await c.get(path, headers=couple, params={param: INT64_MAX + 1})
            assert_invalid(r, param)
            r = await c.get(path, headers=couple, params={param: INT64_MAX})
            assert r.status_code == 200, (path, r.text)
        r = await c.get(
            f"/api/admin/weddings/{w}/events", headers=admin(settings), params={"after_seq": 10**30}
        )
        assert_invalid(r, "after_seq")


async def test_deep_huge_or_out_of_range_json_bodies_are_refused(
    world: World, gateways: list[str], settings: Settings
) -> None:
    path = f"/api/admin/weddings/{world.wedding}/events"

    def event(data_json: str) -> bytes:
        return f'{{"channel":"chat","type":"announcement","data":{data_json}}}'.encode()

    headers = {**admin(settings), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateways[0]) as c:
        for body, why in [
            (event(f'{{"n":{nested(31)}}}'), "nested deeper than 32 levels at $.data.n[0]"),
            (event(f'{{"n":{nested(5000)}}}'), "nested too deeply"),
            (event(f'{{"n":{2**64}}}'), "integer outside int64 at $.data.n"),
            (event('{"n":"\\ud800"}'), "surrogate"),
        ]:
            r = await c.post(path, headers=headers, content=body)
            assert r.status_code in (400, 422) and r.json()["code"] == "invalid", r.text
            assert why in r.json()["message"], r.text
        name = nested(3000, '"x"')
        wedding = f'{{"name":{name},"date":"2031-06-21","timezone":"UTC"}}'
        r = await c.post(
            "/api/weddings",
            headers={**world.auth(world.couple), "Content-Type": "application/json"},
            content=wedding.encode(),
        )
        assert_invalid(r, "nested")
        # bigger than NATS takes (max_payload, 1 MiB): it could never be stored
        r = await c.post(
            path,
            headers=admin(settings),
            json={"channel": "chat", "type": "announcement", "data": {"text": "x" * (1024 * 1024)}},
        )
        assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
        ok = await c.post(path, headers=headers, content=event(f'{{"n":{nested(30)}}}'))
        assert ok.status_code == 201, ok.text


async def test_jwt_name_and_email_claims_are_used_only_when_storable(
    world: World, gateways: list[str], settings: Settings
) -> None:
    secret = settings.auth.jwt_secret
    assert secret

    def token(sub: Any, **claims: Any) -> dict[str, str]:
        payload = {"sub": sub, "exp": int(time.time()) + 300, **claims}
        return {"Authorization": "Bearer " + jwt.encode(payload, secret)}

    body = {"name": "W", "date": "2031-06-21", "timezone": "UTC"}
    long_name = "Bartholomew " * 5_000  # 60 000 characters
    # the claims, then the display name and email the member gets from them
    cases: list[tuple[dict[str, Any], str | None, str | None]] = [
        ({"name": 5, "email": ["a@b.c"]}, None, None),
        ({"name": {"first": "Ann"}, "email": 7}, None, None),
        ({"name": "Ann\u0000", "email": "ann\u0000@example.org"}, None, None),
        ({"name": "\ud800Ann", "email": "not an address"}, None, None),
        ({"name": "   ", "email": "ann@example.org"}, None, "ann@example.org"),
        ({"name": long_name}, long_name.strip()[:200], None),
    ]
    async with httpx.AsyncClient(base_url=gateways[0]) as c:
        for claims, name, email in cases:
            user = "u-" + uuid.uuid4().hex
            r = await c.post("/api/weddings", headers=token(user, **claims), json=body)
            assert r.status_code == 201, (claims.keys(), r.text)
            members = await c.get(f"/api/weddings/{r.json()['id']}/members", headers=token(user))
            (me,) = members.json()
            assert (me["display_name"], me["email"]) == (name, email), claims.keys()
        for sub in ["a\u0000b", "\udc00", 42]:
            r = await c.get("/api/notifications", headers=token(sub))
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "unauthorized" and "ub" in r.json()["message"], r.text


@contextlib.asynccontextmanager
async def api_with(settings: Settings, *routes: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings)
    for route in routes:
        app.register(route)
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_an_unexpected_error_is_logged_with_its_traceback_in_the_error_format(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug (here a route of the test's own that fails) answers ``{code, message}`` like
    every other error, and its traceback is in the log; the query string is not."""

    @get("/test/broken", sync_to_thread=False)
    def broken() -> None:
        raise RuntimeError("a bug nobody foresaw")

    # the app leaves logging to config/logging.py (logging_config=None): records propagate
    async with api_with(settings, broken) as client:
        r = await client.get("/test/broken?token=secret-in-the-query")
    assert r.status_code == 500
    assert r.json() == {"code": "internal", "message": "internal server error"}
    (record,) = [r for r in caplog.records if r.name == "app.errors"]
    assert record.exc_info is not None and "a bug nobody foresaw" in str(record.exc_info[1])
    assert "GET /test/broken" in record.getMessage()
    assert "secret-in-the-query" not in caplog.text


# -- readers: what older versions stored ---------------------------------------------------


NAME = "Quillon Deepnest"


def stored_event(user: str, data_json: str, event_id: str) -> bytes:
    """An event envelope as an older gateway stored it (msgspec's field order)."""
    return (
        f'{{"id":"{event_id}","type":"message","channel":"chat",'
        f'"actor":{{"user_id":"{user}","role":"guest"}},"data":{data_json},'
        f'"ts":1700000000.5}}'
    ).encode()


async def test_events_stored_before_the_limits_do_not_break_history_export_or_erase(
    world: World, gateways: list[str], conns: Connections, settings: Settings
) -> None:
    """A chat message nested 600 (or 3 000) levels deep, stored before the edge refused it,
    made history, admin history and export of the whole wedding answer 500 for good, and
    its author's erase fail after their sessions were ended."""
    guest = await world.add("guest")
    guest_auth = {"Authorization": "Bearer " + issue_token(settings.auth, guest, name=NAME)}
    async with httpx.AsyncClient(base_url=gateways[0]) as c:
        r = await c.put(
            f"/api/weddings/{world.wedding}/members/{guest}",
            headers=world.auth(world.couple),
            json={"role": "guest", "display_name": NAME},
        )
        assert r.status_code == 200, r.text
    await world.join(guest)  # a live session, ended by the erase
    subject = wedding_subject(world.wedding, "chat")
    planted = {
        "plain": stored_event(guest, f'{{"text":"hello from {NAME}"}}', "e-plain"),
        "deep600": stored_event(guest, f'{{"t":{nested(600, json.dumps(NAME))}}}', "e-600"),
        "deep3000": stored_event(guest, f'{{"t":{nested(3000, json.dumps(NAME))}}}', "e-3000"),
        "not-json": b'{"id":"e-broken","type":"message", \xff not json',
    }
    seqs = {
        k: (await conns.js.publish(subject, v, stream=EVENTS.name)).seq for k, v in planted.items()
    }

    async with httpx.AsyncClient(base_url=gateways[1], timeout=60) as c:
        items = {e["seq"]: e for e in await history(gateways[1], world)}
        assert sorted(items) == sorted(seqs.values())
        assert items[seqs["plain"]]["event"]["data"] == {"text": f"hello from {NAME}"}
        # 600 levels still decode: served as stored, byte for byte
        deep = items[seqs["deep600"]]["event"]["data"]["t"]
        for _ in range(600):
            (deep,) = deep
        assert deep == NAME and "unreadable" not in items[seqs["deep600"]]
        # deeper than the decoder goes, or not JSON: a placeholder, in its place in order
        assert items[seqs["deep3000"]] == {
            "seq": seqs["deep3000"],
            "unreadable": True,
            "event": {
                "id": "e-3000",
                "type": "message",
                "channel": "chat",
                "actor": {"user_id": guest, "role": "guest"},
                "data": {},
                "ts": 1700000000.5,
            },
        }
        assert items[seqs["not-json"]]["unreadable"] is True
        assert items[seqs["not-json"]]["event"]["actor"] is None

        r = await c.get(f"/api/admin/weddings/{world.wedding}/events", headers=admin(settings))
        assert r.status_code == 200, r.text
        assert [e["seq"] for e in r.json()["events"]] == sorted(seqs.values())

        r = await c.get("/api/me/export", headers=guest_auth)
        assert r.status_code == 200, r.text
        mine = {e["seq"]: e for e in r.json()["events"]}
        assert sorted(mine) == sorted(seqs[k] for k in ("plain", "deep600", "deep3000"))
        assert mine[seqs["deep3000"]]["stored"] == planted["deep3000"].decode()

        r = await c.delete("/api/me", headers=guest_auth)
        assert r.status_code == 200, r.text

        r = await c.get(
            f"/api/weddings/{world.wedding}/events",
            headers=world.auth(world.couple),
            params={"limit": 1000},
        )
        assert r.status_code == 200, r.text
        assert sorted(e["seq"] for e in r.json()["events"]) == sorted(seqs.values())
        assert NAME not in r.text
    async for m in _stored(conns, world.wedding):
        assert NAME.encode() not in m, "the name is still in JetStream"


async def _stored(conns: Connections, wedding: str) -> AsyncIterator[bytes]:
    async for m in scan(conns.js, EVENTS.name, wedding_wildcard(wedding)):
        yield m.data
