"""One module per delivery channel, each a real protocol client."""

from workers.notifications.channels.base import NotConfigured, SendError
from workers.notifications.channels.destination import DestinationRefused, check_url
from workers.notifications.channels.email import EmailChannel, message_id
from workers.notifications.channels.push import PushChannel, public_key
from workers.notifications.channels.sms import SmsChannel
from workers.notifications.channels.webhook import (
    WebhookChannel,
    new_secret,
    signed_headers,
    webhook_client,
)

__all__ = [
    "DestinationRefused", "EmailChannel", "NotConfigured", "PushChannel", "SendError", "SmsChannel",
    "WebhookChannel", "check_url", "message_id", "new_secret", "public_key", "signed_headers",
    "webhook_client",
]  # fmt: skip
