"""Whether a request arrived over HTTPS, for `security.require_https`.

The connection's own scheme counts first. Behind a TLS-terminating proxy the connection is plain
HTTP, so `X-Forwarded-Proto` is believed, but only from a peer listed in `security.trusted_proxies`
(IPs or CIDR networks; default loopback): anyone else could simply send the header. When a proxy
chain appends to the header, the last value is the one our trusted peer wrote.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SECURE_SCHEMES = frozenset({"https", "wss"})
FORWARDED_FOR_HEADER = b"x-forwarded-for"
FORWARDED_PROTO_HEADER = b"x-forwarded-proto"


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    """Networks from `security.trusted_proxies` entries ("10.0.0.5", "10.0.0.0/8", "::1")."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"security.trusted_proxies: {entry!r} is not an IP address or network") from None
    return tuple(networks)


@dataclass(frozen=True)
class TransportPolicy:
    """Decides whether a request counts as HTTPS, and which address it comes from."""

    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def of(cls, trusted_proxies: Iterable[str]) -> TransportPolicy:
        return cls(parse_trusted_proxies(trusted_proxies))

    def is_trusted_peer(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:  # a unix socket path or a test client name
            return False
        return any(address in network for network in self.trusted_proxies)

    def is_secure(self, scope: Scope) -> bool:
        if scope.get("scheme", "http") in SECURE_SCHEMES:
            return True
        forwarded = _last_header(scope, FORWARDED_PROTO_HEADER)
        if forwarded is None or not self.is_trusted_peer(scope):
            return False
        last_hop = forwarded.split(",")[-1].strip().lower()
        return last_hop in SECURE_SCHEMES

    def client_address(self, scope: Scope) -> str | None:
        """The caller's address: the last X-Forwarded-For hop when the peer is a trusted proxy, else the peer."""
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = _last_header(scope, FORWARDED_FOR_HEADER)
        if forwarded is not None and self.is_trusted_peer(scope):
            last_hop = forwarded.split(",")[-1].strip()
            if last_hop:
                return last_hop[:64]
        return peer


def _last_header(scope: Scope, name: bytes) -> str | None:
    found = None
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            found = value.decode("latin-1")
    return found
