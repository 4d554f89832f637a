"""Who may push: an optional shared token and an optional allow-list of networks. Pure."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final
from urllib.parse import quote, quote_plus

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address
REDACTED: Final = b"[redacted]"


def token_ok(expected: str | None, presented: str | None) -> bool:
    """True when no token is configured, or the presented one matches in constant time."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def _address(text: str) -> Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> Address | None:
    """The pushing client's address.

    `X-Forwarded-For` (all its header lines, in order) is honoured only when the peer is a
    trusted proxy; it is read from the right, skipping trusted proxies, so a client cannot
    forge its way in.
    """
    address = _address(peer) if peer else None
    if address is None or not forwarded_for or not _within(address, trusted_proxies):
        return address
    hops = ",".join(forwarded_for).split(",")
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            return None
        if not _within(hop_address, trusted_proxies):
            return hop_address
    return address


def scrub(data: bytes, secret: str | None) -> bytes:
    """`data` with `secret`, raw or %-encoded as a client may send it, replaced."""
    if not secret:
        return data
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}
    for form in sorted(forms, key=len, reverse=True):
        data = data.replace(form.encode(), REDACTED)
    return data


def network_ok(address: Address | None, allowed: Sequence[Network]) -> bool:
    """True when no allow-list is configured, or the address is inside it."""
    if not allowed:
        return True
    return address is not None and _within(address, allowed)
