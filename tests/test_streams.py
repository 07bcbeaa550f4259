from __future__ import annotations

import dataclasses
import logging
import uuid

import pytest
from nats.js.api import KeyValueConfig

from runtime.connections import Connections
from streams import StreamConfigError, StreamSpec, ensure_stream
from streams.buckets import BucketSpec, ensure_bucket, existing_bucket

pytestmark = pytest.mark.asyncio


def spec() -> StreamSpec:
    tag = uuid.uuid4().hex[:8]
    return StreamSpec(
        name=f"T_{tag}", subjects=(f"test.{tag}.>",), description="test", max_age=3600
    )


async def test_created_then_idempotent_then_drift_updated(conns: Connections) -> None:
    s = spec()
    try:
        await ensure_stream(conns.js, s, replicas=1)
        await conns.js.publish(s.subjects[0].replace(">", "a"), b"kept")
        await ensure_stream(conns.js, s, replicas=1)
        drifted = dataclasses.replace(s, description="changed", max_age=7200)
        await ensure_stream(conns.js, drifted, replicas=1)
        info = await conns.js.stream_info(s.name)
        assert info.config.description == "changed"
        assert info.config.max_age == 7200
        assert info.state.messages == 1
    finally:
        await conns.js.delete_stream(s.name)


async def test_shrinking_retention_is_refused(conns: Connections) -> None:
    s = spec()
    try:
        await ensure_stream(conns.js, s, replicas=1)
        with pytest.raises(StreamConfigError, match="max_age"):
            await ensure_stream(conns.js, dataclasses.replace(s, max_age=60), replicas=1)
        assert (await conns.js.stream_info(s.name)).config.max_age == 3600
    finally:
        await conns.js.delete_stream(s.name)


async def test_events_stream_allows_a_consumer_per_room_and_process(conns: Connections) -> None:
    # nats-server 2.15 defaults every stream to 1000 consumers; a gateway holds one per room
    info = await conns.js.stream_info("WEDSYNC_EVENTS")
    assert info.config.max_consumers is not None and info.config.max_consumers >= 100_000


async def test_a_drifted_stream_is_updated_with_a_log_line(
    conns: Connections, caplog: pytest.LogCaptureFixture
) -> None:
    s = spec()
    try:
        await conns.js.add_stream(dataclasses.replace(s, description="old").config(1))
        with caplog.at_level(logging.INFO, logger="streams.definitions"):
            await ensure_stream(conns.js, s, replicas=1)
        assert (await conns.js.stream_info(s.name)).config.description == "test"
        assert f"updated stream {s.name}" in caplog.text and "'old'" in caplog.text
    finally:
        await conns.js.delete_stream(s.name)


async def test_a_bucket_is_created_then_reconciled_with_a_log_line(
    conns: Connections, caplog: pytest.LogCaptureFixture
) -> None:
    b = BucketSpec(name=f"T_{uuid.uuid4().hex[:8]}", description="declared", history=2)
    try:
        # as an older release (or a path that knew no better) created it
        old = await conns.js.create_key_value(KeyValueConfig(bucket=b.name, description="old"))
        await old.put("k", b"v")
        with caplog.at_level(logging.INFO, logger="streams.buckets"):
            kv = await ensure_bucket(conns.js, b, replicas=1)
        info = await conns.js.stream_info(b.stream)
        assert info.config.description == "declared" and info.config.max_msgs_per_subject == 2
        assert info.config.allow_direct and info.config.max_consumers == b.max_consumers
        assert f"updated bucket {b.name}" in caplog.text
        assert (await kv.get("k")).value == b"v"  # nothing stored was lost
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="streams.buckets"):
            await ensure_bucket(conns.js, b, replicas=1)  # idempotent: no line
        assert caplog.text == ""
        with pytest.raises(StreamConfigError, match="history"):
            await ensure_bucket(conns.js, dataclasses.replace(b, history=1), replicas=1)
    finally:
        await conns.js.delete_stream(b.stream)


async def test_erasure_never_creates_the_presence_bucket(conns: Connections) -> None:
    assert await existing_bucket(conns.js, BucketSpec(f"T_{uuid.uuid4().hex[:8]}", "x")) is None


async def test_a_stream_another_process_created_and_stamped_meanwhile_is_taken_as_is(
    conns: Connections,
) -> None:
    """Two API processes starting on a fresh server: both find no stream, the first
    creates it and stamps its epoch, the second's create (the plain declaration) is
    refused by JetStream as a different configuration and must not stop its start."""
    from streams.definitions import create_stream

    s = spec()
    try:
        await ensure_stream(conns.js, s, replicas=1)  # the first process, all the way
        epoch = (await conns.js.stream_info(s.name)).config.metadata
        assert not await create_stream(conns.js, s.config(1))  # the second: already there
        await ensure_stream(conns.js, s, replicas=1)  # and it goes on from what it finds
        assert (await conns.js.stream_info(s.name)).config.metadata == epoch
    finally:
        await conns.js.delete_stream(s.name)


async def test_a_bucket_another_process_created_and_reconciled_meanwhile_is_taken_as_is(
    conns: Connections,
) -> None:
    """As for streams: the second process's create (the plain KeyValueConfig, without the
    consumer cap the first one added) is refused as a different configuration and must not
    stop its start."""
    from streams.buckets import create_bucket

    b = BucketSpec(name=f"T_{uuid.uuid4().hex[:8]}", description="declared")
    try:
        await ensure_bucket(conns.js, b, replicas=1)  # the first process, all the way
        assert not await create_bucket(conns.js, b.config(1))  # the second: already there
        kv = await ensure_bucket(conns.js, b, replicas=1)  # and it goes on from what it finds
        await kv.put("k", b"v")
        assert (await conns.js.stream_info(b.stream)).config.max_consumers == b.max_consumers
    finally:
        await conns.js.delete_stream(b.stream)
