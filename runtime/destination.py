"""Where a webhook may be sent: public internet addresses only (unless a deployment allows
private ones, ``WEDSYNC_WEBHOOK_ALLOW_PRIVATE``, for dev and tests with local receivers).

A webhook URL is chosen by a wedding's couple or planner, and the server POSTs to it: left
unchecked that is a request forgery into the server's own network (loopback services, the
cloud metadata address 169.254.169.254, private ranges) and, through the delivery log, a
port scanner. So the URL is checked twice:

* at registration (:func:`check_url`): its host, resolved, must have only public addresses;
* at every send (:class:`GuardedTransport`): the HTTP client's connections go through a
  network backend that resolves the host itself, refuses unless every address is public,
  and connects to the address it checked. A name that resolved to a public address at
  registration and to a private one now (DNS rebinding) is refused, and there is no second
  lookup between the check and the connect for it to change in.

A refusal says only "not a public address": not which address, nor whether anything
listens there. Redirects are not followed (httpx's default), so a public endpoint cannot
bounce a delivery inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
REFUSED = "destination refused: not a public address"


class DestinationRefused(Exception):
    """A webhook URL whose host is (or resolves to) a non-public address, or not at all."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def is_public(address: Address) -> bool:
    """A globally routable unicast address (an IPv4 address inside IPv6 is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in NAT64:  # well-known NAT64 prefix: the IPv4 address in the low bits
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (an IP literal is itself); [] if it does not."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError):
        return []
    out: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


async def allowed_address(host: str, port: int, allow_private: bool) -> Address:
    """The address to connect to: the first ``host`` resolves to, once all are checked."""
    addresses = await resolve(host, port)
    if not addresses:
        raise DestinationRefused
    if not allow_private and not all(is_public(a) for a in addresses):
        raise DestinationRefused  # one private answer is enough to refuse the name
    return addresses[0]


async def check_url(url: str, allow_private: bool) -> None:
    """Registration: :class:`DestinationRefused` unless an http(s) URL to a public host."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except (httpx.InvalidURL, ValueError):
        raise DestinationRefused from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DestinationRefused
    await allowed_address(parsed.host, port, allow_private)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = await allowed_address(host, port, self.allow_private)
        except DestinationRefused as exc:
            raise httpcore.ConnectError(REFUSED) from exc
        return await self._inner.connect_tcp(
            str(address), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(REFUSED)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes through :class:`GuardedBackend`.

    No proxy from the environment (a proxy would be the address checked, not the
    destination) and no redirects (the client's default). httpx has no public hook for
    the network backend, so the connection pool is rebuilt with it; the webhook tests
    exercise this on every delivery, so an httpx that changed this fails them loudly."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow_private),
        )


def refused(exc: BaseException) -> bool:
    """Whether an httpx error was this guard refusing the destination."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
