"""The presence table: the KV bucket of who is in each wedding room, its in-memory mirror or
scoped reads, and a record's lifecycle there (key, durable join/leave log, conditional
expiry)."""

from runtime.presence.records import expire, publish_log, record_key
from runtime.presence.table import (
    Change,
    Kind,
    Mirror,
    PresenceTable,
    Stamped,
    presence_bucket,
    read_keys,
    read_table,
)

__all__ = [
    "Change",
    "Kind",
    "Mirror",
    "PresenceTable",
    "Stamped",
    "expire",
    "presence_bucket",
    "publish_log",
    "read_keys",
    "read_table",
    "record_key",
]
