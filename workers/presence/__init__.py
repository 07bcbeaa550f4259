"""The presence-expiry worker."""

from workers.presence.expiry import PresenceExpiry

__all__ = ["PresenceExpiry"]
