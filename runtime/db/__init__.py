"""PostgreSQL: the connection pool and the schema migrations."""

from runtime.db.migrations import Migration, MigrationError, migrate, shipped_migrations
from runtime.db.types import Conn

__all__ = ["Conn", "Migration", "MigrationError", "migrate", "shipped_migrations"]
