"""``GET /api/weddings/{id}/state``: the wedding's shared state and the seq it is at; and
the budget approvals a couple member decides."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from opentelemetry import trace

from app.access import require_member, require_role
from app.auth import GuestContacts, Identity, client_ip
from app.connections import Connections
from app.db.types import Conn
from app.errors import Conflict, Invalid, NotFound, Unavailable
from app.gateway import Hub
from app.history import last_seq
from config.telemetry import producing
from streams.changes import Decision, Verdict, change_subject
from streams.definitions import CHANGES
from streams.permissions import Role, permissions_for
from streams.protocol import Actor
from streams.state import CHANNEL_OF, EntityKind

tracer = trace.get_tracer(__name__)


class EntityState(msgspec.Struct):
    version: int
    fields: msgspec.Raw


class WeddingState(msgspec.Struct):
    seq: int  # apply the events after this seq (resume with after_seq=seq) to stay current
    epoch: str
    entities: dict[str, dict[str, EntityState]]


class Approval(msgspec.Struct):
    id: str
    entity: str
    entity_id: str
    op: str
    fields: dict[str, Any]
    requested_by: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    status: str
    decided_by: str | None
    decided_at: dt.datetime | None


class ApprovalDecision(msgspec.Struct, forbid_unknown_fields=True):
    decision: Verdict


class Queued(msgspec.Struct):
    seq: int  # position in the changes stream; the outcome arrives as events


#: How long ``/state`` waits for a wedding's committed events still in the outbox to be
#: published (a few ms normally; while NATS is away it answers anyway, after this).
OUTBOX_WAIT = 2.0


async def _published(conn: Conn, wedding_id: uuid.UUID) -> None:
    """Wait (a little) until the wedding's committed changes have their events published.
    Not needed for correctness (folding skips an event already in the snapshot) but it
    spares a client a deleted entity coming back for a moment from a later event."""
    deadline = time.monotonic() + OUTBOX_WAIT
    delay = 0.005
    while time.monotonic() < deadline and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM event_outbox WHERE wedding_id = $1)", wedding_id
    ):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def _settled(conn: Conn, wedding_id: uuid.UUID) -> None:
    """Within a transaction: wait until no worker is applying a change of the wedding, and
    keep it so until commit. The worker holds the wedding's state row FOR UPDATE from
    before it reads until it commits, and events are published only after the commit
    (the outbox), so every event stored so far is reflected in what this transaction
    reads, and no change commits meanwhile (docs/conflicts.md)."""
    await conn.execute("INSERT INTO wedding_state (wedding_id) VALUES ($1) ON CONFLICT DO NOTHING",
                       wedding_id)  # fmt: skip
    await conn.execute("SELECT 1 FROM wedding_state WHERE wedding_id = $1 FOR SHARE", wedding_id)


class StateController(Controller):
    path = "/api/weddings/{wedding_id:uuid}"
    tags = ["state"]  # noqa: RUF012

    @get("/state", summary="Entities the caller may read, and the event seq they reflect")
    async def state(self, wedding_id: uuid.UUID, identity: Identity, state: State) -> WeddingState:
        conns: Connections = state.conns
        hub: Hub = state.hub
        async with conns.pool.acquire() as conn, conn.transaction():
            m = await require_member(conn, wedding_id, identity)
            readable = [k.value for k in EntityKind
                        if permissions_for(m.role, m.status)[CHANNEL_OF[k].value].read]  # fmt: skip
            await _published(conn, wedding_id)
            await _settled(conn, wedding_id)
            seq = await last_seq(conns.js, conns.pool, wedding_id)
            rows = await conn.fetch(
                """SELECT kind, entity_id, version, fields::text AS fields FROM entities
                   WHERE wedding_id = $1 AND NOT deleted AND kind = ANY($2::text[])""",
                wedding_id, readable,
            )  # fmt: skip
        entities: dict[str, dict[str, EntityState]] = {k: {} for k in readable}
        contacts: GuestContacts = state.auth.contacts
        for r in rows:
            raw = r["fields"]
            if r["kind"] == EntityKind.GUESTS.value:  # their contact is sealed at rest
                raw = msgspec.json.encode(contacts.open_fields(msgspec.json.decode(raw)))
            else:
                raw = raw.encode()
            entities[r["kind"]][r["entity_id"]] = EntityState(r["version"], msgspec.Raw(raw))
        return WeddingState(seq=seq, epoch=hub.epoch, entities=entities)

    @get("/approvals", summary="Budget approvals, pending first (couple and planner)")
    async def approvals(
        self, wedding_id: uuid.UUID, identity: Identity, state: State,
        request: Request[Any, Any, Any],
    ) -> list[Approval]:  # fmt: skip
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, client_ip(request), "read_approvals")
            async with conn.transaction():
                # as in /state: wait for a worker publishing a decision to commit it, so a
                # client that saw approval.granted/denied never reads it as still pending
                await _settled(conn, wedding_id)
                rows = await conn.fetch(
                    """SELECT * FROM approvals WHERE wedding_id = $1
                       ORDER BY status <> 'pending', requested_at DESC LIMIT 200""",
                    wedding_id,
                )  # fmt: skip
        out = []
        for r in rows:
            change = msgspec.json.decode(r["change"])
            out.append(Approval(str(r["id"]), change["entity"], change["entity_id"], change["op"],
                                change["fields"], r["requested_by"], r["requested_at"],
                                r["expires_at"], r["status"], r["decided_by"],
                                r["decided_at"]))  # fmt: skip
        return out

    @post("/approvals/{approval_id:uuid}", status_code=202,
          summary="Grant or deny a pending budget approval (couple)")  # fmt: skip
    async def decide(
        self, wedding_id: uuid.UUID, approval_id: uuid.UUID, data: ApprovalDecision,
        identity: Identity, state: State, request: Request[Any, Any, Any],
    ) -> Queued:  # fmt: skip
        if data.decision is Verdict.EXPIRE:
            raise Invalid("decision is grant or deny")
        conns: Connections = state.conns
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, client_ip(request), "decide_approvals",
                               frozenset({Role.COUPLE}))  # fmt: skip
            async with conn.transaction():  # as in approvals(): a decision seen is decided
                await _settled(conn, wedding_id)
                status = await conn.fetchval(
                    "SELECT status FROM approvals WHERE id = $1 AND wedding_id = $2",
                    approval_id, wedding_id,
                )  # fmt: skip
        if status is None:
            raise NotFound("no such approval")
        if status != "pending":
            raise Conflict(f"approval already {status}")
        decision = Decision(wedding_id=str(wedding_id), approval_id=str(approval_id),
                            verdict=data.decision, actor=Actor(identity.user_id, m.role),
                            ts=time.time())  # fmt: skip
        partitions = state.settings.conflicts.partitions
        subject = change_subject(str(wedding_id), partitions)
        headers = {"Nats-Msg-Id": f"decide:{approval_id}"}
        try:
            with producing(tracer, CHANGES.name, subject, headers):
                ack = await conns.js.publish(subject, msgspec.json.encode(decision),
                                             stream=CHANGES.name, headers=headers)  # fmt: skip
        except Exception as exc:
            raise Unavailable("decision not stored; retry") from exc
        return Queued(seq=ack.seq)
