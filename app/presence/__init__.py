"""Presence: who is in each wedding room right now, kept in a NATS KV bucket."""

from app.presence.diffs import DiffBatcher, coalesce, diff_frame
from app.presence.table import Change, Kind, Mirror, PresenceTable, presence_bucket
from app.presence.tracker import Presence, PresenceTracker, auto_status, expire, publish_log

__all__ = [
    "Change",
    "DiffBatcher",
    "Kind",
    "Mirror",
    "Presence",
    "PresenceTable",
    "PresenceTracker",
    "auto_status",
    "coalesce",
    "diff_frame",
    "expire",
    "presence_bucket",
    "publish_log",
]
