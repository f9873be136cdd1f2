"""The client address of a console request, for throttling and the audit log.

Contract: `TrustedProxies.parse(text)` reads `TOKMODEL_TRUSTED_PROXIES` (comma-separated
addresses or CIDRs; ValueError naming a bad entry). `client_address(req)` is the socket
peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is read from the right and
the first address that is not a trusted proxy is the client (the ones to its left could have
been written by anyone). When every address is trusted, the left-most one is the client; an
unparsable entry stops the walk at the last trusted hop.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import falcon

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> TrustedProxies:
        networks = []
        for entry in (text or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"TOKMODEL_TRUSTED_PROXIES: {entry!r} is not an address "
                                 "or CIDR") from None
        return cls(tuple(networks))

    def trusts(self, address: str | None) -> bool:
        ip = _ip(address or "")
        return ip is not None and any(ip in network for network in self.networks)

    def client_address(self, req: falcon.Request) -> str:
        peer = req.remote_addr or "unknown"
        if not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in (req.get_header("X-Forwarded-For") or "").split(",")]
        hops = [hop for hop in hops if hop]
        client = peer
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                break
            client = str(ip)
            if not self.trusts(client):
                break
        return client
