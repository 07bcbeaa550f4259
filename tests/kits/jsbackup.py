"""JetStream stream backup and restore through the JetStream API, as `nats stream backup`
and `nats stream restore` do it (nats-io/jsm.go snapshots.go): the restore drill runs
without the Go CLI.

Backup: ``$JS.API.STREAM.SNAPSHOT.<stream>`` with a deliver subject; the server answers
with the stream's config and state, then sends the snapshot (an S2-compressed tar) in
chunks, each acknowledged on its reply subject (flow control), and an empty message last.
Restore: ``$JS.API.STREAM.RESTORE.<stream>`` with that config and state (the stream must not
exist), then the chunks, each a request to the returned deliver subject, and an empty one
that ends it; the server answers it with the created stream.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

CHUNK = 64 * 1024


class BackupError(RuntimeError):
    """The server refused a snapshot or a restore."""


@dataclass(frozen=True)
class Snapshot:
    stream: str
    meta: dict[str, Any]  # {"config": ..., "state": ...} at the time of the snapshot
    data: bytes


def _checked(msg: Msg) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(msg.data)
    if "error" in body:
        raise BackupError(str(body["error"]))
    return body


async def backup(nc: NATS, stream: str, timeout: float = 60.0) -> Snapshot:
    inbox = nc.new_inbox()
    chunks: list[bytes] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Msg) -> None:
        if not msg.data:  # the end (a status 204), or an error status
            status = (msg.headers or {}).get("Status", "")
            if status and "204" not in status and not done.done():
                done.set_exception(BackupError(f"snapshot of {stream}: {msg.headers}"))
            elif not done.done():
                done.set_result(None)
            return
        chunks.append(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")

    sub = await nc.subscribe(inbox, cb=on_chunk)
    try:
        request = {"deliver_subject": inbox, "chunk_size": 128 * 1024}
        reply = await nc.request(
            f"$JS.API.STREAM.SNAPSHOT.{stream}", json.dumps(request).encode(), timeout=10
        )
        meta = _checked(reply)
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()
    return Snapshot(stream, {"config": meta["config"], "state": meta["state"]}, b"".join(chunks))


async def restore(nc: NATS, snapshot: Snapshot, timeout: float = 60.0) -> dict[str, Any]:
    """Create the stream from ``snapshot``; the server's stream info of it."""
    reply = await nc.request(
        f"$JS.API.STREAM.RESTORE.{snapshot.stream}", json.dumps(snapshot.meta).encode(), timeout=10
    )
    deliver = _checked(reply)["deliver_subject"]
    for i in range(0, len(snapshot.data), CHUNK):
        ack = await nc.request(deliver, snapshot.data[i : i + CHUNK], timeout=10)
        if ack.data:
            _checked(ack)
    return _checked(await nc.request(deliver, b"", timeout=timeout))
