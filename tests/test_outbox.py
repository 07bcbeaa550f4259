"""The conflicts worker's outbox and refusals, through a real conflicts worker process.

- A change PostgreSQL cannot store, which reached the changes stream past the edge, is
  refused to its author at once, and another wedding of the same partition is not held up
  by retries.
- An outbox row whose publish may have happened longer ago than the duplicate window is
  looked up in the stream, not published a second time; one that is not there is
  published once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest_asyncio

from config.settings import Settings
from runtime.connections import Connections
from streams.changes import ChangeRequest, change_subject, partition_of
from streams.definitions import CHANGES, DEAD_LETTERS, EVENTS
from streams.permissions import Channel, Role
from streams.protocol import Actor, Event
from streams.state import EntityKind, Op
from streams.subjects import wedding_subject, wedding_wildcard
from tests.kits.statekit import join_member
from tests.kits.world import World, eventually, worker_process

PARTITIONS = 4  # the default WEDSYNC_CONFLICT_PARTITIONS


@pytest_asyncio.fixture(scope="module")
async def conflicts_worker(settings: Settings) -> AsyncIterator[None]:
    async with worker_process(settings, "conflicts"):
        yield


async def same_partition(settings: Settings, gateway: str, wedding: str) -> World:
    """Another wedding whose changes share ``wedding``'s partition."""
    want = partition_of(wedding, PARTITIONS)
    while True:
        other = World(settings, gateway)
        await other.create()
        if partition_of(other.wedding, PARTITIONS) == want:
            return other


async def dead_letters(conns: Connections) -> int:
    info = await conns.js.stream_info(DEAD_LETTERS.name)
    return int(info.state.messages)


async def test_unstorable_change_is_refused_at_once_without_holding_the_partition(
    world: World,
    gateways: list[str],
    settings: Settings,
    conns: Connections,
    conflicts_worker: None,
) -> None:
    bystander = await same_partition(settings, gateways[0], world.wedding)
    author = await join_member(world, gateways[0], world.couple)
    other = await join_member(bystander, gateways[1], bystander.couple)
    dlq_before = await dead_letters(conns)
    # as if it came past the edge by another route: PostgreSQL refuses NUL in text
    poisoned = ChangeRequest(
        client_id="poison-1",
        wedding_id=world.wedding,
        actor=Actor(user_id=world.couple, role=Role.COUPLE),
        entity=EntityKind.TASKS,
        entity_id="t-nul",
        op=Op.CREATE,
        fields={"title": "a\x00b", "assignee": None, "due": None, "done": False},
        base_version=None,
        ts=time.time(),
    )
    stored = await conns.js.publish(
        change_subject(world.wedding, PARTITIONS),
        msgspec.json.encode(poisoned),
        stream=CHANGES.name,
    )
    cid = await other.change("tasks", "t-ok", "create", {"title": "after the poison"})

    refused = await author.event("conflict.rejected", entity_id="t-nul")
    assert refused["data"]["reason"] == "invalid"
    assert refused["data"]["change"] == {"id": "poison-1", "seq": stored.seq, "by": world.couple}
    created = await other.expect("entity.created", cid, entity_id="t-ok")
    assert created["data"]["fields"]["title"] == "after the poison"
    async with conns.pool.acquire() as db:
        retried = await db.fetchval(
            "SELECT count(*) FROM worker_failures WHERE stream = $1 AND stream_seq = $2",
            CHANGES.name,
            stored.seq,
        )
        rows = await db.fetchval(
            "SELECT count(*) FROM entities WHERE wedding_id = $1", uuid.UUID(world.wedding)
        )
    assert retried == 0  # one attempt, no redelivery: the partition moved on at once
    assert rows == 0  # nothing of it was stored
    assert await dead_letters(conns) == dlq_before


async def stored_copies(conns: Connections, wedding: str, payload: bytes) -> list[int]:
    seqs: list[int] = []
    seq = 0
    while True:
        try:
            msg = await conns.js.get_msg(
                EVENTS.name, seq=seq + 1, subject=wedding_wildcard(wedding), next=True
            )
        except Exception:
            return seqs
        seq = int(msg.seq or 0)
        if msg.data == payload:
            seqs.append(seq)


async def test_row_tried_before_the_duplicate_window_is_looked_up_not_republished(
    world: World, conns: Connections, conflicts_worker: None
) -> None:
    wedding = uuid.UUID(world.wedding)
    subject = wedding_subject(wedding, Channel.TASKS)

    def event(n: int) -> bytes:
        return msgspec.json.encode(
            Event(
                id=str(uuid.uuid4()),
                type="entity.created",
                channel=Channel.TASKS,
                actor=Actor(user_id=world.couple, role=Role.COUPLE),
                data={"entity": "tasks", "entity_id": f"x{n}", "version": 1, "fields": {}},
                ts=time.time(),
            )
        )

    published, lost = event(1), event(2)
    # the first was published an hour ago, but its confirmation never committed (and a
    # republish would not be caught by the duplicate window: that copy has another id)
    await conns.js.publish(
        subject, published, stream=EVENTS.name, headers={"Nats-Msg-Id": f"old-{uuid.uuid4()}"}
    )
    partition = partition_of(world.wedding, PARTITIONS)
    async with conns.pool.acquire() as db:
        await db.executemany(
            """INSERT INTO event_outbox (partition, wedding_id, subject, msg_id, payload,
                                         headers, first_try_at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, now() - interval '1 hour')""",
            [
                (partition, wedding, subject, f"test:{uuid.uuid4()}", p, json.dumps({}))
                for p in (published, lost)
            ],
        )
        await db.execute("SELECT pg_notify('wedsync_outbox', $1)", str(partition))

    async def drained() -> bool:
        async with conns.pool.acquire() as db:
            n: int = await db.fetchval(
                "SELECT count(*) FROM event_outbox WHERE wedding_id = $1", wedding
            )
        return n == 0

    await eventually(drained, timeout=20)
    assert len(await stored_copies(conns, world.wedding, published)) == 1
    [second] = await stored_copies(conns, world.wedding, lost)
    async with conns.pool.acquire() as db:
        head = await db.fetchval("SELECT seq FROM outbox_published WHERE wedding_id = $1", wedding)
    assert head == second  # the wedding's confirmed position moved on to it
