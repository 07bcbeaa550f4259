"""``wedsync worker notifications``: who hears about each wedding event, on which channel,
when — and sending it exactly once. See docs/notifications.md."""

from workers.notifications.dispatcher import Dispatcher
from workers.notifications.escalation import Escalator
from workers.notifications.planner import Planner, notification_id
from workers.notifications.rules import RULES, Notice, WeddingContext, notices

__all__ = [
    "RULES",
    "Dispatcher",
    "Escalator",
    "Notice",
    "Planner",
    "WeddingContext",
    "notices",
    "notification_id",
]
