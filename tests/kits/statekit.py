"""Driving wedding state as clients do: change frames over real sockets, events folded
with the same ``fold`` a client uses, ``/state`` over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from runtime.connections import Connections
from streams.state import State, fold
from tests.kits.world import World, connect, recv, send


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
        self.sent: list[str] = []  # client ids of the change frames sent, in order
        self.outcomes: set[tuple[str, str]] = set()  # (author, client id): outcome arrived

    async def change(
        self,
        entity: str,
        entity_id: str,
        op: str,
        fields: dict[str, Any] | None = None,
        base: int | None = None,
        cid: str | None = None,
    ) -> str:
        """Send a change frame; its client id."""
        cid = cid or uuid.uuid4().hex[:12]
        frame: dict[str, Any] = {
            "id": cid,
            "entity": entity,
            "entity_id": entity_id,
            "op": op,
            "base_version": base,
        }
        if fields:
            frame["fields"] = fields
        await send(self.ws, type="change", **frame)
        self.sent.append(cid)
        return cid

    def take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "event":
            self.last_seq = frame["seq"]
            self.events.append(frame["event"])
            fold(self.state, self.tombstones, frame["event"])
            data = frame["event"].get("data")
            change = data.get("change") if isinstance(data, dict) else None
            if isinstance(change, dict) and "id" in change and "by" in change:
                self.outcomes.add((change["by"], change["id"]))
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

    @staticmethod
    def matches(e: dict[str, Any], type_: str, cid: str | None, data: dict[str, Any]) -> bool:
        return (
            e.get("type") == type_
            and all(e["data"].get(k) == v for k, v in data.items())
            and (cid is None or (e["data"].get("change") or {}).get("id") == cid)
        )

    def seen(self, type_: str, cid: str | None = None, **data: Any) -> list[dict[str, Any]]:
        """Events received so far of ``type_`` whose data has these values (and, given
        ``cid``, that name the change with that client id)."""
        return [e for e in self.events if self.matches(e, type_, cid, data)]

    async def expect(
        self, type_: str, cid: str | None = None, timeout: float = 15, **data: Any
    ) -> dict[str, Any]:
        """Like :meth:`event`, but an event received earlier (while waiting for an ack,
        say) counts too."""
        found = self.seen(type_, cid, **data)
        if found:
            return found[0]
        return await self.until(lambda e: self.matches(e, type_, cid, data), timeout)

    async def settle(self, timeout: float = 20) -> None:
        """Read until every change this member sent was refused at the edge, or was acked
        and its outcome (an event naming it) has arrived."""
        deadline = time.monotonic() + timeout
        while pending := [
            c
            for c in self.sent
            if c not in self.errors and (c not in self.acks or (self.user, c) not in self.outcomes)
        ]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.user}: no outcome for {pending}")
            self.take(await recv(self.ws, left))


async def join_member(world: World, gateway: str, user: str) -> Member:
    """``user`` joined and connected through ``gateway``, past the welcome."""
    ws = await connect(gateway, world.wedding, await world.join(user))
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return Member(ws, user)


async def quiesce(world: World, members: list[Member], timeout: float = 20) -> int:
    """Wait until every change the members sent has its outcome, then until each member
    has folded everything up to ``/state``'s seq (each must read every channel written);
    that seq."""
    await asyncio.gather(*(m.settle(timeout) for m in members))
    seq: int = (await wedding_state(world, world.couple))["seq"]
    await asyncio.gather(*(m.catch_up(seq, timeout) for m in members))
    return seq


async def wedding_state(world: World, user: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/state", headers=world.auth(user))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def without_empty(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if v}


async def stored_entities(conns: Connections, wedding: str) -> dict[str, Any]:
    """The wedding's live rows in PostgreSQL, shaped like ``/state``'s entities."""
    async with conns.pool.acquire() as db:
        rows = await db.fetch(
            """SELECT kind, entity_id, version, fields::text AS fields FROM entities
               WHERE wedding_id = $1 AND NOT deleted""",
            uuid.UUID(wedding),
        )
    out: dict[str, Any] = {}
    for r in rows:
        out.setdefault(r["kind"], {})[r["entity_id"]] = {
            "version": r["version"],
            "fields": json.loads(r["fields"]),
        }
    return out
