"""Ephemeral signals ("typing...") on the wedding socket, across two `wedsync api`
processes: relayed live to who may see them, never stored (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import ClientConnection

from runtime.connections import Connections
from streams.definitions import EVENTS
from streams.subjects import wedding_wildcard
from tests.kits.world import World, connect, recv_type, send


async def opened(base: str, world: World, user: str) -> ClientConnection:
    ws = await connect(base, world.wedding, await world.join(user))
    await recv_type(ws, "welcome")
    return ws


async def signal_of(ws: ClientConnection, user: str, **match: Any) -> dict[str, Any]:
    while True:
        f = await recv_type(ws, "peer_signal")
        if f["user_id"] == user and all(f.get(k) == v for k, v in match.items()):
            return f


async def stored(conns: Connections, world: World) -> int:
    info = await conns.js.stream_info(EVENTS.name, subjects_filter=wedding_wildcard(world.wedding))
    return sum((info.state.subjects or {}).values())


async def test_typing_reaches_the_room_and_is_never_stored(
    world: World, gateways: list[str], conns: Connections
) -> None:
    planner, vendor, guest = (
        await world.add("planner"),
        await world.add("vendor"),
        await world.add("guest"),
    )
    p, v = await opened(gateways[0], world, planner), await opened(gateways[0], world, vendor)
    c, g = await opened(gateways[1], world, world.couple), await opened(gateways[1], world, guest)
    before = await stored(conns, world)
    await send(c, type="signal", kind="typing", channel="chat")
    got = await signal_of(p, world.couple)
    assert got == {
        "type": "peer_signal",
        "user_id": world.couple,
        "display_name": None,
        "connection_id": got["connection_id"],
        "kind": "typing",
        "channel": "chat",
        "target": None,
        "active": True,
    }
    await signal_of(v, world.couple)
    await signal_of(g, world.couple)
    # a guest typing: the couple sees it, a vendor does not (presence visibility); the
    # couple's next signal comes after it from the same process, so the vendor would
    # have had the guest's first
    await send(g, type="signal", kind="typing", channel="chat")
    await signal_of(c, guest)
    await send(c, type="signal", kind="viewing", target="seating_chart", active=False)
    seen: list[dict[str, Any]] = []
    while True:
        f = await recv_type(v, "peer_signal")
        seen.append(f)
        if f["kind"] == "viewing":
            break
    assert all(f["user_id"] != guest for f in seen)
    assert seen[-1]["target"] == "seating_chart" and seen[-1]["active"] is False
    # typing where one may not write, or nowhere
    await send(v, type="signal", kind="typing", channel="budget")
    assert (await recv_type(v, "error"))["code"] == "forbidden"
    await send(v, type="signal", kind="typing")
    assert (await recv_type(v, "error"))["code"] == "invalid"
    assert await stored(conns, world) == before  # nothing in JetStream
    for ws in (p, v, c, g):
        await ws.close()
