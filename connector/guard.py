"""Who may push: an optional shared token and an optional allow-list of networks. Pure."""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final
from urllib.parse import unquote_to_bytes

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address
REDACTED: Final = b"[redacted]"


def token_ok(expected: str | None, presented: str | None) -> bool:
    """True when no token is configured, or the presented one (decoded) matches in constant
    time; a token in the path may be followed by one `/`."""
    if expected is None:
        return True
    if presented is None:
        return False
    given = presented.encode()
    same = hmac.compare_digest(expected.encode(), given)
    slashed = hmac.compare_digest(expected.encode() + b"/", given)
    return same or slashed


def target_token(target: bytes, base: bytes) -> str | None:
    """The token a raw request target carries, decoded: the path after `base` + `/`, else
    the `token` query parameter (`+` a space); None when it carries none or not in UTF-8."""
    path, _, query = target.partition(b"?")
    if b"://" in path:  # absolute-form: http://host/path
        path = b"/" + path.split(b"://", 1)[1].partition(b"/")[2]
    prefix = base + b"/"
    found: bytes | None = None
    if path.startswith(prefix) and len(path) > len(prefix):
        found = unquote_to_bytes(path[len(prefix) :])
    else:
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if unquote_to_bytes(name.replace(b"+", b" ")) == b"token":
                found = unquote_to_bytes(value.replace(b"+", b" "))
                break
    try:
        return None if found is None else found.decode()
    except UnicodeDecodeError:
        return None


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
    """`data` with every spelling of `secret` replaced: each of its bytes raw or
    %-encoded (upper or lower case, all, some or none of them), a space also as `+`."""
    if not secret:
        return data
    return _spellings(secret).sub(REDACTED, data)


@lru_cache(maxsize=4)
def _spellings(secret: str) -> re.Pattern[bytes]:
    def hexdigit(char: str) -> bytes:
        return f"[{char.upper()}{char.lower()}]".encode() if char.isalpha() else char.encode()

    units = []
    for byte in secret.encode():
        encoded = b"%" + b"".join(hexdigit(char) for char in f"{byte:02x}")
        plus = b"|\\+" if byte == 0x20 else b""
        units.append(b"(?:%s|%s%s)" % (re.escape(bytes([byte])), encoded, plus))
    return re.compile(b"".join(units))


def network_ok(address: Address | None, allowed: Sequence[Network]) -> bool:
    """True when no allow-list is configured, or the address is inside it."""
    if not allowed:
        return True
    return address is not None and _within(address, allowed)
