"""One module per delivery channel, each a real protocol client."""

from runtime.destination import DestinationRefused, check_url
from workers.notifications.channels.base import NotConfigured, SendError
from workers.notifications.channels.email import EmailChannel, message_id
from workers.notifications.channels.push import PushChannel
from workers.notifications.channels.sms import SmsChannel
from workers.notifications.channels.webhook import WebhookChannel, signed_headers, webhook_client

__all__ = [
    "DestinationRefused",
    "EmailChannel",
    "NotConfigured",
    "PushChannel",
    "SendError",
    "SmsChannel",
    "WebhookChannel",
    "check_url",
    "message_id",
    "signed_headers",
    "webhook_client",
]
