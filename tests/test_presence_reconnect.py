"""Presence after one gateway's NATS connection came back (app/gateway/roster.py): the
changes it could not see live while cut off reach its members as leaves, joins and updates.

Only that process loses NATS (a relay on loopback between it and the session's
nats-server, cut then restored), so the other one goes on writing presence meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection

from config.settings import Settings
from runtime.connections import Connections
from runtime.presence import read_keys
from streams.buckets import PRESENCE_BUCKET
from streams.presence import Record
from tests.kits.relay import Relay
from tests.kits.world import World, connect, eventually, recv_type, running_gateways, send

_decode = msgspec.json.Decoder(Record)
ENV = {"WEDSYNC_PRESENCE_GRACE": "0.5"}
KINDS = ("joins", "updates", "leaves")


def fold(view: dict[str, tuple[str, str]], diff: dict[str, Any]) -> None:
    """Apply a presence_diff to ``view`` (connection id -> (user, status))."""
    for kind in KINDS:
        for u in diff[kind]:
            for c in u["connections"]:
                if kind == "leaves":
                    view.pop(c["connection_id"], None)
                else:
                    view[c["connection_id"]] = (u["user_id"], c["status"])


async def joined(ws: ClientConnection) -> tuple[str, dict[str, tuple[str, str]]]:
    """Its welcome: its own connection id and who it shows as here."""
    welcome = await recv_type(ws, "welcome")
    view: dict[str, tuple[str, str]] = {}
    fold(view, {"joins": welcome["presence"], "updates": [], "leaves": []})
    return welcome["session_id"], view


async def test_changes_missed_while_cut_off_from_nats_arrive_as_a_diff(
    settings: Settings, conns: Connections
) -> None:
    assert settings.nats.url is not None
    relay = Relay(settings.nats.url)
    kv = await conns.js.key_value(PRESENCE_BUCKET.name)
    async with (
        relay.serving() as relayed,
        running_gateways(settings, 1, {**ENV, "WEDSYNC_NATS_URL": relayed}) as [cut_url],
        running_gateways(settings, 1, ENV) as [other_url],
    ):
        world = World(settings, other_url)
        await world.create()
        leaver, changer, newcomer = [await world.add(r) for r in ("planner", "family", "vendor")]

        async def bucket() -> dict[str, tuple[str, str]]:
            """The wedding's records as the bucket holds them now."""
            read = await read_keys(kv, f"{world.wedding}.*", conns.js)
            records = [_decode.decode(s.value) for s in read.values() if s.value is not None]
            return {r.connection_id: (r.user_id, r.status) for r in records}

        a = await connect(cut_url, world.wedding, await world.join(world.couple))
        b = await connect(other_url, world.wedding, await world.join(leaver))
        c = await connect(other_url, world.wedding, await world.join(changer))
        d: ClientConnection | None = None
        try:
            a_id, view = await joined(a)
            b_id, _ = await joined(b)
            c_id, _ = await joined(c)
            while {b_id, c_id} - view.keys():
                fold(view, await recv_type(a, "presence_diff"))

            relay.cut()  # from now on nothing the server sends reaches the first process
            await send(c, type="presence", status="busy")
            await b.close()  # deleted from the bucket after the grace
            d = await connect(other_url, world.wedding, await world.join(newcomer))
            d_id, _ = await joined(d)
            meanwhile = {
                a_id: (world.couple, "active"),
                c_id: (changer, "busy"),
                d_id: (newcomer, "active"),
            }

            async def written() -> bool:
                return await bucket() == meanwhile

            await eventually(written, timeout=10)  # all three stored while cut off
            relay.restore()

            shown: set[tuple[str, str]] = set()  # (kind, user) of the diffs A receives
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):  # its reconnect (~2 s), then the reread
                    while view != meanwhile:
                        f = await recv_type(a, "presence_diff", 15)
                        fold(view, f)
                        shown |= {(k, u["user_id"]) for k in KINDS for u in f[k]}
            assert view == meanwhile == await bucket(), f"A shows {view}, after {shown}"
            assert shown == {("leaves", leaver), ("updates", changer), ("joins", newcomer)}
        finally:
            for ws in (a, c, d):
                if ws is not None:
                    await ws.close()
