"""``GET /api/weddings/{id}/state``: the wedding's shared state and the seq it is at (a
vendor's tasks and vendor records: their own, streams/scope.py); and the budget approvals a
couple member decides."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from opentelemetry import trace

from app.auth import AuthContext, GuestContacts, Identity, client_ip
from app.errors import Conflict, Invalid, NotFound, Unavailable
from app.gateway import Hub
from app.state import store
from app.weddings.access import require_member, require_role
from config.settings import Settings
from config.telemetry import producing
from runtime.connections import Connections
from runtime.eventlog import last_seq
from streams.changes import Decision, Verdict, change_subject
from streams.definitions import CHANGES
from streams.permissions import Role, permissions_for
from streams.protocol import Actor
from streams.scope import SCOPE_FIELD, SCOPED_ROLES
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


class StateController(Controller):
    path = "/api/weddings/{wedding_id:uuid}"
    tags = ["state"]  # noqa: RUF012

    @get("/state", summary="Entities the caller may read, and the event seq they reflect")
    async def state(
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        conns: Connections,
        hub: Hub,
        auth: AuthContext,
    ) -> WeddingState:
        async with conns.pool.acquire() as conn, conn.transaction():
            m = await require_member(conn, wedding_id, identity)
            readable = [
                k.value
                for k in EntityKind
                if permissions_for(m.role, m.status)[CHANNEL_OF[k].value].read
            ]
            # record-level scope: of these kinds, only the rows whose field names the caller
            scoped = {k.value: f for k, f in SCOPE_FIELD.items()} if m.role in SCOPED_ROLES else {}
            await store.published(conn, wedding_id)
            await store.settled(conn, wedding_id)
            seq = await last_seq(conns.js, conns.pool, wedding_id)
            rows = await store.entities(conn, wedding_id, readable, scoped, identity.user_id)
        entities: dict[str, dict[str, EntityState]] = {k: {} for k in readable}
        contacts: GuestContacts = auth.contacts
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
        self,
        wedding_id: uuid.UUID,
        identity: Identity,
        conns: Connections,
        request: Request[Any, Any, Any],
    ) -> list[Approval]:
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(conn, m, identity, client_ip(request), "read_approvals")
            async with conn.transaction():
                # as in /state: wait for a worker publishing a decision to commit it, so a
                # client that saw approval.granted/denied never reads it as still pending
                await store.settled(conn, wedding_id)
                rows = await store.approvals(conn, wedding_id)
        out = []
        for r in rows:
            change = msgspec.json.decode(r["change"])
            out.append(
                Approval(
                    str(r["id"]),
                    change["entity"],
                    change["entity_id"],
                    change["op"],
                    change["fields"],
                    r["requested_by"],
                    r["requested_at"],
                    r["expires_at"],
                    r["status"],
                    r["decided_by"],
                    r["decided_at"],
                )
            )
        return out

    @post(
        "/approvals/{approval_id:uuid}",
        status_code=202,
        summary="Grant or deny a pending budget approval (couple)",
    )
    async def decide(
        self,
        wedding_id: uuid.UUID,
        approval_id: uuid.UUID,
        data: ApprovalDecision,
        identity: Identity,
        conns: Connections,
        settings: Settings,
        request: Request[Any, Any, Any],
    ) -> Queued:
        if data.decision is Verdict.EXPIRE:
            raise Invalid("decision is grant or deny")
        async with conns.pool.acquire() as conn:
            m = await require_member(conn, wedding_id, identity)
            await require_role(
                conn, m, identity, client_ip(request), "decide_approvals", frozenset({Role.COUPLE})
            )
            async with conn.transaction():  # as in approvals(): a decision seen is decided
                await store.settled(conn, wedding_id)
                status = await store.approval_status(conn, wedding_id, approval_id)
        if status is None:
            raise NotFound("no such approval")
        if status != "pending":
            raise Conflict(f"approval already {status}")
        decision = Decision(
            wedding_id=str(wedding_id),
            approval_id=str(approval_id),
            verdict=data.decision,
            actor=Actor(identity.user_id, m.role),
            ts=time.time(),
        )
        partitions = settings.conflicts.partitions
        subject = change_subject(str(wedding_id), partitions)
        headers = {"Nats-Msg-Id": f"decide:{approval_id}"}
        try:
            with producing(tracer, CHANGES.name, subject, headers):
                ack = await conns.js.publish(
                    subject, msgspec.json.encode(decision), stream=CHANGES.name, headers=headers
                )
        except Exception as exc:
            raise Unavailable("decision not stored; retry") from exc
        return Queued(seq=ack.seq)
