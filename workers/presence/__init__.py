"""``wedsync worker presence``: expiry of ghosts and the presence analytics sampler."""

from workers.presence.analytics import PresenceAnalytics
from workers.presence.expiry import PresenceExpiry

__all__ = ["PresenceAnalytics", "PresenceExpiry"]
