"""``wedsync worker conflicts``: applies every change, in order, and publishes the result.

One JetStream consumer per partition of WEDSYNC_CHANGES, each with at most one message in
flight, so one wedding's changes are applied strictly in stream order by one worker at a
time — however many worker processes run (extra ones are hot standbys, or own other
partitions with ``WEDSYNC_CONFLICT_OWN_PARTITIONS``).

Per change, inside the runner's transaction (which also records the message as consumed):
lock the wedding's state row, load, apply the rules, write the state and the resulting
events into the outbox, commit, ack; the outbox relay publishes the events after the
commit (workers/conflicts/outbox.py). A crash before the commit redelivers the change into
unchanged state (and no event of it exists anywhere); after it, the message is found
consumed and its events are in the outbox until published.

A change PostgreSQL refuses (a value it cannot store) or the rules fail on is refused to
its author at once (``conflict.rejected``, reason ``invalid``), in a transaction of its own
(the runner's ``refuse`` hook), rather than retried: it would fail the same way each time,
holding up its partition.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import asyncpg
import msgspec
from nats.js import JetStreamContext
from opentelemetry import trace

from config.settings import ConflictSettings
from config.telemetry import producing
from runtime.db import scope
from runtime.db.types import Conn
from streams.changes import (
    ChangeMessage,
    ChangeRequest,
    Decision,
    Verdict,
    change_subject,
)
from streams.definitions import CHANGES, EVENTS
from streams.permissions import Channel, WeddingStatus
from streams.protocol import SYSTEM_ACTOR, Event
from streams.subjects import wedding_subject
from workers.conflicts import outbox, store
from workers.conflicts.engine import Rules, apply_change
from workers.conflicts.outcome import Emit, Outcome, View, invalid
from workers.outage import is_infrastructure
from workers.periodic import Periodic
from workers.runner import Delivery

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

EVENT_NAMESPACE = uuid.UUID("0f5d8e2a-6c3b-4a1f-9e7d-5b2c8a4f6e13")

_decode = msgspec.json.Decoder(ChangeMessage)
_encode = msgspec.json.Encoder()


class ConflictHandler:
    def __init__(self, settings: ConflictSettings) -> None:
        self.rules = Rules(settings.approval_threshold, settings.approval_ttl)

    async def __call__(self, d: Delivery, conn: Conn) -> None:
        try:
            msg = _decode.decode(d.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("skipped malformed change %s:%d: %s", d.stream, d.stream_seq, exc)
            return
        wedding_id = uuid.UUID(msg.wedding_id)
        await scope.enter(conn, wedding_id)  # this transaction sees that wedding only (RLS)
        status = await store.lock_wedding(conn, wedding_id)
        if status is None:
            return  # the wedding was deleted
        if isinstance(msg, ChangeRequest):
            view = View(await store.load(conn, wedding_id, msg))
            out = apply_change(msg, d.stream_seq, view, status, self.rules)
        else:
            out = await self._decide(conn, wedding_id, msg, d.stream_seq, status)
        await store.save(conn, wedding_id, out, d.stream_seq)
        await self._enqueue(conn, wedding_id, out, msg, d)

    async def refuse(self, d: Delivery, conn: Conn, exc: Exception) -> bool:
        """The runner's call after this handler failed while NATS and PostgreSQL answer (its
        transaction rolled back): a failure that would repeat every time (PostgreSQL
        refusing a value, a bug in the rules) is refused to its author now, rather than
        holding the partition, every wedding in it, through retries."""
        if not deterministic(exc):
            return False  # a serialization failure or deadlock: retried as usual
        log.warning("change %s:%d refused as invalid: %r", d.stream, d.stream_seq, exc)
        msg = _decode.decode(d.data)  # it decoded the first time
        if isinstance(msg, ChangeRequest):
            await scope.enter(conn, uuid.UUID(msg.wedding_id))
            out = invalid(msg, d.stream_seq, "the change holds a value that cannot be stored")
            await self._enqueue(conn, uuid.UUID(msg.wedding_id), out, msg, d)
        return True  # a decision that cannot be applied: the approval stays pending

    async def _enqueue(
        self, conn: Conn, wedding_id: uuid.UUID, out: Outcome, msg: ChangeMessage, d: Delivery
    ) -> None:
        partition = int(d.subject.split(".")[2])
        await outbox.enqueue(conn, partition, wedding_id, self._outgoing(wedding_id, out, msg, d))

    async def _decide(
        self, conn: Conn, wedding_id: uuid.UUID, msg: Decision, seq: int, status: WeddingStatus
    ) -> Outcome:
        held = await store.pending_approval(conn, wedding_id, msg.approval_id)
        if held is None:
            return Outcome()  # decided or expired already: the first decision stands
        verdict = {Verdict.GRANT: "granted", Verdict.DENY: "denied", Verdict.EXPIRE: "expired"}
        result = verdict[msg.verdict]
        await store.decide(conn, msg.approval_id, result, msg.actor.user_id, msg.ts)
        emit = Emit(
            f"approval.{result}",
            Channel.BUDGET,
            {
                "approval_id": msg.approval_id,
                "entity": held.entity.value,
                "entity_id": held.entity_id,
                "by": msg.actor.user_id,
                "requested_by": held.actor.user_id,
            },
        )
        if msg.verdict is not Verdict.GRANT:
            return Outcome(events=[emit])
        view = View(await store.load(conn, wedding_id, held))
        # the held change, applied now under the usual conflict rules (e.g. deleted since)
        out = apply_change(held, seq, view, status, self.rules, approved=True)
        out.events.insert(0, emit)
        return out

    def _outgoing(
        self, wedding_id: uuid.UUID, out: Outcome, msg: ChangeMessage, d: Delivery
    ) -> list[outbox.Outgoing]:
        events = []
        for i, e in enumerate(out.events):
            msg_id = f"{d.stream}:{d.stream_seq}:{i}"
            event = Event(
                id=str(uuid.uuid5(EVENT_NAMESPACE, msg_id)),
                type=e.type,
                channel=e.channel,
                actor=msg.actor,
                data=e.data,
                ts=msg.ts,
            )
            subject = wedding_subject(wedding_id, e.channel)
            headers: dict[str, str] = {}
            # the trace goes on from here into the notifications worker (the relay sends
            # these headers with the event once the transaction committed)
            with producing(tracer, EVENTS.name, subject, headers):
                events.append(outbox.Outgoing(msg_id, subject, event, headers))
        return events


def deterministic(exc: Exception) -> bool:
    """Whether applying the change would fail the same way again on healthy services:
    PostgreSQL refusing the data (bad encoding, out of range, a constraint) or a bug in
    the rules. Not an outage, and not a serialization failure or deadlock (retried)."""
    return not (is_infrastructure(exc) or isinstance(exc, asyncpg.TransactionRollbackError))


class ApprovalExpiry(Periodic):
    """Publishes an ``expire`` decision for each overdue approval, into the same ordered
    stream as the changes (stored once however many workers notice)."""

    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        settings: ConflictSettings,
        every: float = 30.0,
    ) -> None:
        self.js, self.pool, self.settings, self.every = js, pool, settings, every
        self.name = "approval expiry"

    async def tick(self) -> int:
        return await self.sweep()

    async def sweep(self, now: dt.datetime | None = None) -> int:
        async with self.pool.acquire() as conn:
            due = await store.due_approvals(conn, now or dt.datetime.now(dt.UTC))
        for approval_id, wedding_id in due:
            decision = Decision(
                wedding_id=str(wedding_id),
                approval_id=str(approval_id),
                verdict=Verdict.EXPIRE,
                actor=SYSTEM_ACTOR,
                ts=time.time(),
            )
            await self.js.publish(
                change_subject(str(wedding_id), self.settings.partitions),
                _encode.encode(decision),
                stream=CHANGES.name,
                headers={"Nats-Msg-Id": f"expire:{approval_id}"},
            )
        return len(due)
