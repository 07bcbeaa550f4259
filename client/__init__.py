"""The Python async client of the WedSync realtime protocol (used by tests and benchmarks)."""

from client.backoff import Backoff
from client.connection import ClientClosed, ServerError, State, WeddingClient, is_terminal

__all__ = ["Backoff", "ClientClosed", "ServerError", "State", "WeddingClient", "is_terminal"]
