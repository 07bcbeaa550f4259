from __future__ import annotations

import dataclasses
import uuid

import pytest

from runtime.connections import Connections
from streams import StreamConfigError, StreamSpec, ensure_stream

pytestmark = pytest.mark.asyncio


def spec() -> StreamSpec:
    tag = uuid.uuid4().hex[:8]
    return StreamSpec(name=f"T_{tag}", subjects=(f"test.{tag}.>",), description="test",
                      max_age=3600)  # fmt: skip


async def test_created_then_idempotent_then_drift_updated(conns: Connections) -> None:
    s = spec()
    try:
        await ensure_stream(conns.js, s)
        await conns.js.publish(s.subjects[0].replace(">", "a"), b"kept")
        await ensure_stream(conns.js, s)
        drifted = dataclasses.replace(s, description="changed", max_age=7200)
        await ensure_stream(conns.js, drifted)
        info = await conns.js.stream_info(s.name)
        assert info.config.description == "changed"
        assert info.config.max_age == 7200
        assert info.state.messages == 1
    finally:
        await conns.js.delete_stream(s.name)


async def test_shrinking_retention_is_refused(conns: Connections) -> None:
    s = spec()
    try:
        await ensure_stream(conns.js, s)
        with pytest.raises(StreamConfigError, match="max_age"):
            await ensure_stream(conns.js, dataclasses.replace(s, max_age=60))
        assert (await conns.js.stream_info(s.name)).config.max_age == 3600
    finally:
        await conns.js.delete_stream(s.name)


async def test_events_stream_allows_a_consumer_per_room_and_process(conns: Connections) -> None:
    # nats-server 2.15 defaults every stream to 1000 consumers; a gateway holds one per room
    info = await conns.js.stream_info("WEDSYNC_EVENTS")
    assert info.config.max_consumers is not None and info.config.max_consumers >= 100_000
