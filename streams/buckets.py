"""JetStream key-value buckets declared as data, and applied idempotently at start.

A bucket is a stream (``KV_<name>``) underneath: applying a declaration creates it when
missing, and otherwise reconciles what it declares — the replicas above all (a bucket
created on a single node, or before ``WEDSYNC_STREAM_REPLICAS`` was raised, is scaled up
on the next start), the description and the history — with one log line saying what
changed. Like the streams (streams/definitions.py), it refuses a change that would throw
stored values away (a shorter history) or another storage type.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RePublish, StorageType
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from streams.definitions import StreamConfigError, created
from streams.presence import BUCKET
from streams.subjects import PRESENCE_LIVE_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    name: str
    description: str
    history: int = 1  # values kept per key (1: only the current one)
    # core NATS subject prefix JetStream republishes every stored change under
    # (``<prefix>.<key>``, with Nats-Sequence headers), for readers that want only some keys
    # live without a consumer each
    republish: str | None = None
    # the stream's consumer cap (nats-server 2.15 caps a stream that says nothing at 1000;
    # streams/definitions.py): watches of the admin API and the workers
    max_consumers: int = 1_000_000

    @property
    def stream(self) -> str:
        return f"KV_{self.name}"

    @property
    def republished(self) -> RePublish | None:
        if self.republish is None:
            return None
        return RePublish(src=f"$KV.{self.name}.>", dest=f"{self.republish}.>")

    def config(self, replicas: int) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.name,
            description=self.description,
            history=self.history,
            storage=StorageType.FILE,
            replicas=replicas,
            republish=self.republished,
            direct=True,  # reads of some keys without a consumer (batch direct get)
        )


#: the presence bucket (streams/presence.py), history 1: only the current record
PRESENCE_BUCKET = BucketSpec(
    name=BUCKET,
    description="Who is connected to which wedding right now (one key per device)",
    republish=PRESENCE_LIVE_ROOT,  # gateways follow only their rooms' keys (app/gateway/hub.py)
)


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, *, replicas: int) -> KeyValue:
    """The bucket, created with ``replicas`` if missing, else brought to its declaration."""
    try:
        info = await js.stream_info(spec.stream)
    except NotFoundError:
        if await create_bucket(js, spec.config(replicas)):
            log.info("created bucket %s (replicas %d)", spec.name, replicas)
        info = await js.stream_info(spec.stream)  # what KeyValueConfig cannot say: below
    have = info.config
    if have.storage != StorageType.FILE:
        raise StreamConfigError(f"bucket {spec.name}: storage is {have.storage}, declared file")
    if (have.max_msgs_per_subject or 0) > spec.history:
        raise StreamConfigError(
            f"bucket {spec.name}: declared history {spec.history} would delete stored values "
            f"(it keeps {have.max_msgs_per_subject}); change it deliberately with the nats CLI"
        )
    wanted: dict[str, Any] = {
        "num_replicas": replicas,
        "description": spec.description,
        "max_msgs_per_subject": spec.history,
        "republish": spec.republished,
        "allow_direct": True,
        "max_consumers": spec.max_consumers,
    }
    drift = {k: (getattr(have, k), v) for k, v in wanted.items() if _differs(getattr(have, k), v)}
    if drift:
        await js.update_stream(dataclasses.replace(have, **wanted))
        log.info("updated bucket %s: %s", spec.name, drift)
    return await js.key_value(spec.name)


async def create_bucket(js: JetStreamContext, config: KeyValueConfig) -> bool:
    """Create the bucket; False if another process created it meanwhile and brought it to
    its declaration (what the plain KeyValueConfig cannot say, such as its consumer cap),
    so that JetStream refuses ours as a different configuration."""
    return await created(js.create_key_value(config))


def _differs(have: Any, want: Any) -> bool:
    if isinstance(want, RePublish) or isinstance(have, RePublish):
        # the server fills in the default headers_only; compare what is declared
        def shape(r: Any) -> Any:
            return None if r is None else (r.src, r.dest, bool(r.headers_only))

        return bool(shape(have) != shape(want))
    return bool(have != want)


async def existing_bucket(js: JetStreamContext, spec: BucketSpec) -> KeyValue | None:
    """The bucket if it exists; never creates it (a path that only reads or deletes
    values must not create a bucket with whatever replicas it happens to know)."""
    try:
        await js.stream_info(spec.stream)
    except NotFoundError:
        return None
    return await js.key_value(spec.name)
