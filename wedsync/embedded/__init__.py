"""Real nats-server and PostgreSQL started from their wheels when no URL is configured."""

from wedsync.embedded.nats_server import EmbeddedNats
from wedsync.embedded.postgres import EmbeddedPostgres
from wedsync.embedded.process import EmbeddedError
from wedsync.embedded.services import data_dir_lock, embedded_services

__all__ = [
    "EmbeddedError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "data_dir_lock",
    "embedded_services",
]
