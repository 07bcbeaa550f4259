"""PostgreSQL: the connection pool and the schema migrations."""

from app.db.migrations import Migration, MigrationError, migrate, shipped_migrations
from app.db.types import Conn

__all__ = ["Conn", "Migration", "MigrationError", "migrate", "shipped_migrations"]
