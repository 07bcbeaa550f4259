"""``wedsync worker conflicts``: the authoritative wedding state and its conflict rules."""

from workers.conflicts.engine import Rules, apply_change, policy
from workers.conflicts.outbox import OutboxRelay
from workers.conflicts.outcome import Entity, Outcome, View
from workers.conflicts.worker import ApprovalExpiry, ConflictHandler

__all__ = [
    "ApprovalExpiry",
    "ConflictHandler",
    "Entity",
    "OutboxRelay",
    "Outcome",
    "Rules",
    "View",
    "apply_change",
    "policy",
]
