"""Driving wedding state as clients do: change frames over real sockets, events folded
with the same ``fold`` a client uses, ``/state`` over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from streams.state import State, fold
from tests.world import World, recv, send


class Member:
    """One member's socket and the state it folded from the events it received."""

    def __init__(self, ws: ClientConnection, user: str) -> None:
        self.ws, self.user = ws, user
        self.state: State = {}
        self.tombstones: dict[tuple[str, str], int] = {}
        self.events: list[dict[str, Any]] = []  # every event frame's event, in order
        self.last_seq = 0
        self.acks: dict[str, int] = {}
        self.errors: dict[str, dict[str, Any]] = {}

    async def change(self, entity: str, entity_id: str, op: str, fields: dict[str, Any] | None = None,
                     base: int | None = None, cid: str | None = None) -> str:  # fmt: skip
        """Send a change frame; its client id."""
        cid = cid or uuid.uuid4().hex[:12]
        frame: dict[str, Any] = {"id": cid, "entity": entity, "entity_id": entity_id, "op": op,
                                 "base_version": base}  # fmt: skip
        if fields:
            frame["fields"] = fields
        await send(self.ws, type="change", **frame)
        return cid

    def take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "event":
            self.last_seq = frame["seq"]
            self.events.append(frame["event"])
            fold(self.state, self.tombstones, frame["event"])
        elif frame["type"] == "ack":
            self.acks[frame["id"]] = frame["seq"]
        elif frame["type"] == "error" and frame.get("id"):
            self.errors[frame["id"]] = frame

    async def until(self, predicate: Any, timeout: float = 15) -> dict[str, Any]:
        """Read frames until one (an event's ``event``, an ack or an error) matches."""
        while True:
            frame = await recv(self.ws, timeout)
            self.take(frame)
            subject = frame["event"] if frame["type"] == "event" else frame
            if predicate(subject):
                return subject

    async def event(self, type_: str, timeout: float = 15, **data: Any) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return e.get("type") == type_ and all(e["data"].get(k) == v for k, v in data.items())

        return await self.until(match, timeout)

    async def ack(self, cid: str) -> dict[str, Any]:
        return await self.until(lambda f: f.get("id") == cid and f["type"] in ("ack", "error"))

    async def catch_up(self, seq: int, timeout: float = 15) -> None:
        """Read until the event at ``seq`` (or a later one) has been folded."""
        while self.last_seq < seq:
            self.take(await recv(self.ws, timeout))

    def entity(self, kind: str, entity_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.state.get(kind, {}).get(entity_id)
        return found


async def wedding_state(world: World, user: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/state", headers=world.auth(user))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def without_empty(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if v}
