"""Settings, logging and telemetry setup: built once at start and passed down."""

from config.logging import configure_logging
from config.settings import (
    AuthSettings,
    DatabaseSettings,
    LogSettings,
    NatsSettings,
    ServerSettings,
    Settings,
    SettingsError,
    WorkerSettings,
)

__all__ = [
    "AuthSettings",
    "DatabaseSettings",
    "LogSettings",
    "NatsSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "WorkerSettings",
    "configure_logging",
]
