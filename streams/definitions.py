"""JetStream streams and consumers declared as data, and applied idempotently at start.

Applying a declaration creates what is missing and updates drifted settings, but refuses
any change that would throw stored messages away (shorter retention, smaller limits,
another storage type): that must be done deliberately, by hand.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import BadRequestError, NotFoundError

from streams.changes import partition_filter
from streams.documents import DOCS_ROOT
from streams.subjects import CHANGES_ROOT, DEAD_LETTER_ROOT, EVENTS_ROOT, PRESENCE_ROOT

log = logging.getLogger(__name__)

DAY = 24 * 3600.0


class StreamConfigError(RuntimeError):
    """A declared stream cannot be applied without losing data or breaking its identity."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age: float = 0.0  # seconds; 0 keeps messages until removed deliberately
    duplicate_window: float = 120.0  # seconds in which a repeated Nats-Msg-Id is stored once
    max_msg_size: int = 1024 * 1024
    # nats-server 2.15 caps every stream at 1000 consumers unless the stream says
    # otherwise (and -1 no longer means unlimited). The gateway holds one ordered consumer
    # per (wedding room, process), plus one per resume/history read in progress.
    max_consumers: int = 1_000_000

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            description=self.description,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            max_msg_size=self.max_msg_size,
            num_replicas=replicas,
            allow_direct=True,
            max_consumers=self.max_consumers,
        )


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer of one worker."""

    durable: str
    stream: str
    filter_subjects: tuple[str, ...] = ()
    description: str = ""
    max_ack_pending: int | None = None  # None: from the worker settings' batch size
    batch: int | None = None  # messages per fetch; None: the worker settings' batch
    ack_wait: float | None = None  # None: the worker settings' ack wait
    # a new durable starts at the stream's end rather than its beginning (a worker about
    # *now*: a first deployment must not e-mail about months of history)
    deliver_new: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def config(
        self, *, ack_wait: float, max_ack_pending: int, start_seq: int | None = None
    ) -> ConsumerConfig:
        cfg = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description=self.description or None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if self.deliver_new else DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,  # the runner counts deliveries and dead-letters itself
            max_ack_pending=max_ack_pending,
            **self.extra,
        )
        if len(self.filter_subjects) == 1:
            cfg.filter_subject = self.filter_subjects[0]
        elif self.filter_subjects:
            cfg.filter_subjects = list(self.filter_subjects)
        if start_seq is not None:
            cfg.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = start_seq
        return cfg


EVENTS = StreamSpec(
    name="WEDSYNC_EVENTS",
    subjects=(f"{EVENTS_ROOT}.>",),
    description="Every accepted event of every wedding, in order: the history.",
    duplicate_window=300.0,  # a frame re-sent within 5 min (reconnects) is stored once
)
DEAD_LETTERS = StreamSpec(
    name="WEDSYNC_DLQ",
    subjects=(f"{DEAD_LETTER_ROOT}.>",),
    description="Messages a worker gave up on after its maximum deliveries.",
    max_age=90 * DAY,
)
PRESENCE_LOG = StreamSpec(
    name="WEDSYNC_PRESENCE_LOG",
    subjects=(f"{PRESENCE_ROOT}.>",),
    description="presence.joined / presence.left of every device, for workers and last-seen.",
    max_age=30 * DAY,
    duplicate_window=300.0,
)
CHANGES = StreamSpec(
    name="WEDSYNC_CHANGES",
    subjects=(f"{CHANGES_ROOT}.>",),
    description="Requested changes to wedding state, per partition, for the conflicts worker.",
    max_age=30 * DAY,
    duplicate_window=300.0,  # a change re-sent within 5 min (reconnects) is stored once
)
DOCUMENTS = StreamSpec(
    name="WEDSYNC_DOCS",
    subjects=(f"{DOCS_ROOT}.>",),
    description="Yjs updates of every live document, per document: the tail after its snapshot.",
    # the documents worker folds updates into PostgreSQL snapshots within seconds; a month
    # of tail leaves room for a long worker outage (docs/documents.md)
    max_age=30 * DAY,
    duplicate_window=300.0,  # an update re-sent after a reconnect is stored once
)
STREAMS: tuple[StreamSpec, ...] = (EVENTS, DEAD_LETTERS, PRESENCE_LOG, CHANGES, DOCUMENTS)

_UPDATABLE = (
    "subjects",
    "description",
    "duplicate_window",
    "num_replicas",
    "max_age",
    "max_consumers",
)
_LIMITS = ("max_age", "max_msgs", "max_bytes", "max_msgs_per_subject", "max_msg_size")


def _shrinks(old: StreamConfig, new: StreamConfig) -> list[str]:
    out = []
    for name in _LIMITS:
        before, after = getattr(old, name) or 0, getattr(new, name) or 0
        if before <= 0:
            before = float("inf")
        if after <= 0:
            after = float("inf")
        if after < before:
            out.append(f"{name} {before} -> {after}")
    return out


#: stream metadata naming the stream's life (the resume epoch, docs/protocol.md): its
#: creation time, written once. Unlike ``created`` it survives a backup and restore, so
#: clients resume across a restore with the epoch they have (docs/operations.md).
EPOCH_KEY = "wedsync_epoch"


def created_epoch(info: StreamInfo) -> str:
    """The creation time as epochs are spelled (UTC, ISO 8601 with ``Z``)."""
    if info.created is None:
        return "0"
    text = info.created.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def stream_epoch_of(info: StreamInfo) -> str:
    """The stream's epoch: from its metadata, else (a stream no release has stamped yet)
    its creation time — the same value, since the stamp is the creation time."""
    return (info.config.metadata or {}).get(EPOCH_KEY) or created_epoch(info)


ALREADY_IN_USE = 10058  # JetStream's "stream name already in use with a different configuration"


async def created(create: Awaitable[object]) -> bool:
    """Await a stream's (or bucket's) create; False if JetStream refused it because another
    process created that stream meanwhile and already brought it to its declaration
    (several API processes starting at once on a fresh server)."""
    try:
        await create
    except BadRequestError as exc:
        if exc.err_code != ALREADY_IN_USE:
            raise
        return False
    return True


async def create_stream(js: JetStreamContext, wanted: StreamConfig) -> bool:
    """Add the stream; False if another process added it meanwhile (and stamped its epoch
    first)."""
    return await created(js.add_stream(wanted))


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int) -> None:
    """Create the stream with ``replicas``, or bring it to its declaration and ``replicas``
    (no default: nothing is created with one replica by accident)."""
    wanted = spec.config(replicas)
    created = False
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        created = await create_stream(js, wanted)
        if created:
            log.info("created stream %s (replicas %d)", spec.name, replicas)
        info = await js.stream_info(spec.name)
    have = info.config
    # keep the metadata the server and operators put there, and stamp the epoch once
    wanted.metadata = {**(have.metadata or {}), EPOCH_KEY: stream_epoch_of(info)}
    if have.storage != wanted.storage:
        raise StreamConfigError(f"stream {spec.name}: storage is {have.storage}, declared file")
    if shrunk := _shrinks(have, wanted):
        raise StreamConfigError(
            f"stream {spec.name}: declared limits would delete stored messages "
            f"({', '.join(shrunk)}); change them deliberately with the nats CLI"
        )
    drift = {
        k: (getattr(have, k), getattr(wanted, k))
        for k in _UPDATABLE
        if getattr(have, k) != getattr(wanted, k)
    }
    if EPOCH_KEY not in (have.metadata or {}):
        drift["metadata"] = ({}, {EPOCH_KEY: wanted.metadata[EPOCH_KEY]})
    if drift:
        await js.update_stream(wanted)
        if not created:  # a new stream's epoch stamp is part of its creation
            log.info("updated stream %s: %s", spec.name, drift)


async def ensure_streams(
    js: JetStreamContext, *, replicas: int, duplicate_window: float | None = None
) -> None:
    """Apply every declared stream; ``duplicate_window`` (``WEDSYNC_DUPLICATE_WINDOW``)
    replaces each stream's own window when given."""
    for spec in STREAMS:
        if duplicate_window is not None:
            spec = dataclasses.replace(spec, duplicate_window=duplicate_window)
        await ensure_stream(js, spec, replicas=replicas)


async def missing_streams(js: JetStreamContext) -> list[str]:
    missing = []
    for spec in STREAMS:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            missing.append(spec.name)
    return missing


# The worker consumers: declared here, beside their streams, so the edge can read their
# lag (GET /metrics) without importing the workers.


def conflicts_consumer(partition: int) -> ConsumerSpec:
    """The conflicts worker's consumer of one partition of WEDSYNC_CHANGES."""
    return ConsumerSpec(
        durable=f"conflicts-p{partition}",
        stream=CHANGES.name,
        filter_subjects=(partition_filter(partition),),
        description=f"conflicts worker, partition {partition}: one change in flight",
        # one in flight: a crashed worker's change blocks its partition until redelivered,
        # so the ack wait is short (a redelivery racing a slow first attempt is harmless:
        # the consumed-record and the wedding row lock let only one of them apply it)
        max_ack_pending=1,
        batch=1,
        ack_wait=5.0,
    )


NOTIFICATIONS_CONSUMER = ConsumerSpec(
    durable="notifications",
    stream=EVENTS.name,
    filter_subjects=(f"{EVENTS_ROOT}.>",),
    description="notifications worker: who hears about each wedding event",
    deliver_new=True,
)


DOCUMENTS_CONSUMER = ConsumerSpec(
    durable="documents-heads",
    stream=DOCUMENTS.name,
    description="documents worker: the newest update of each document, for compaction",
)
