"""A presence record's lifecycle in the bucket that gateways and the expiry worker share:
its key, the durable ``presence.joined``/``presence.left`` log, and the conditional delete
that expires it (only at the revision the caller saw, so a reconnect's newer record stays)."""

from __future__ import annotations

import time

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from streams.definitions import PRESENCE_LOG
from streams.presence import PresenceLogEvent, Record
from streams.subjects import presence_subject

_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Record)


def record_key(wedding_id: str, connection_id: str) -> str:
    return f"{wedding_id}.{connection_id}"


async def publish_log(
    js: JetStreamContext, kind: str, record: Record, revision: int, last_seen: float
) -> None:
    """The durable ``presence.joined``/``presence.left`` event (stored once per revision)."""
    event = PresenceLogEvent(
        type=f"presence.{kind}",
        wedding_id=record.wedding_id,
        user_id=record.user_id,
        role=record.role,
        connection_id=record.connection_id,
        at=time.time(),
        last_seen=last_seen,
    )
    msg_id = f"{record_key(record.wedding_id, record.connection_id)}:{kind}:{revision}"
    await js.publish(
        presence_subject(record.wedding_id, kind),
        _encode.encode(event),
        stream=PRESENCE_LOG.name,
        headers={"Nats-Msg-Id": msg_id},
    )


async def expire(js: JetStreamContext, kv: KeyValue, key: str, revision: int) -> bool:
    """Delete a record if it is still at ``revision``; on success log the leave."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return False
    if entry.revision != revision or entry.value is None:
        return False
    record = _decode.decode(entry.value)
    try:
        await kv.delete(key, last=revision)
    except Exception:  # changed meanwhile (a reconnect took it over): not ours to remove
        return False
    await publish_log(js, "left", record, revision, record.disconnected_at or time.time())
    return True
