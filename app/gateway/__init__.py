"""The realtime gateway: WebSocket rooms per wedding over JetStream."""

from app.gateway.connection import OVERFLOW_POLICY, Connection
from app.gateway.endpoint import wedding_socket
from app.gateway.hub import Hub

__all__ = ["OVERFLOW_POLICY", "Connection", "Hub", "wedding_socket"]
