"""What every channel shares: the error a send raises and how provider errors are told apart."""

from __future__ import annotations


class SendError(Exception):
    """A provider refused or could not be reached. ``permanent``: retrying cannot help
    (bad address, 4xx); ``gone``: the address no longer exists (a push subscription)."""

    def __init__(self, message: str, *, permanent: bool = False, gone: bool = False) -> None:
        super().__init__(message[:300])
        self.permanent = permanent or gone
        self.gone = gone


class NotConfigured(SendError):
    """The channel has no provider configured on this deployment."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"{channel} is not configured", permanent=True)


def http_error(status: int, what: str) -> SendError:
    """4xx other than 408/429 are permanent; 404/410 mean the address is gone."""
    if status in (404, 410):
        return SendError(f"{what}: HTTP {status}", gone=True)
    if 400 <= status < 500 and status not in (408, 429):
        return SendError(f"{what}: HTTP {status}", permanent=True)
    return SendError(f"{what}: HTTP {status}")
