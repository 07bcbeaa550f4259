"""Real nats-server and PostgreSQL started from their wheels when no URL is configured."""

from app.embedded.nats_server import EmbeddedNats
from app.embedded.postgres import EmbeddedPostgres
from app.embedded.process import EmbeddedError
from app.embedded.services import data_dir_lock, embedded_services

__all__ = [
    "EmbeddedError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "data_dir_lock",
    "embedded_services",
]
