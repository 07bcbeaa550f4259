"""What a load process needs to know, kept free of the app's imports: load processes are
spawned fresh, and importing the whole app in each would only slow their start."""

from __future__ import annotations

import resource
from dataclasses import dataclass, replace

from websockets.typing import Subprotocol


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one (20 000 here): one fd per socket."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass(frozen=True)
class Seat:
    """One member's socket: where to connect and with which session (for socket.io
    peers, ``wedding`` is the room's name and ``token`` is empty)."""

    url: str
    wedding: str
    user: str
    token: str

    def on(self, url: str) -> Seat:
        """The same seat through another gateway (sessions are not bound to one)."""
        return replace(self, url=url)

    @property
    def ws_url(self) -> str:
        """The seat's WedSync socket address: no token in it (URLs end up in logs)."""
        return self.url.replace("http", "ws", 1) + f"/ws/weddings/{self.wedding}"

    @property
    def subprotocols(self) -> list[Subprotocol]:
        """The token travels in ``Sec-WebSocket-Protocol`` (docs/protocol.md, "Auth")."""
        return [Subprotocol("wedsync.v1"), Subprotocol("wedsync.token." + self.token)]

    @property
    def auth_frame(self) -> str:
        """Or as the socket's first frame, as bench/protocols.py does."""
        return '{"type":"auth","token":"%s"}' % self.token  # noqa: UP031
