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
    %-encoded (upper or lower case, all, some or none of them, and the `%` itself %-encoded
    again to any depth: `%252B`), a space also as `+`; and the same in UTF-16 or UTF-32 text
    (either byte order), replaced there by `[redacted]` in that encoding."""
    if not secret:
        return data
    found = [(start, end, REDACTED) for start, end in _spans(data, secret)]
    if b"\x00" in data:  # ASCII in UTF-16 or UTF-32 has zero bytes
        found += _wide_spans(data, secret)
    if not found:
        return data
    kept, at = [], 0
    for start, end, replacement in sorted(found):
        if start < at:  # overlaps the one before: already replaced
            continue
        kept += [data[at:start], replacement]
        at = end
    kept.append(data[at:])
    return b"".join(kept)


def scrub_text(text: str, secret: str | None) -> str:
    """`scrub` for text (a field's name or value, as decoded)."""
    if not secret or (secret not in text and "%" not in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    return scrub(data, secret).decode("utf-8", "surrogateescape")


def _spans(data: bytes, secret: str) -> list[tuple[int, int]]:
    spans = [match.span() for match in _spellings(secret).finditer(data)]
    if b"%" not in data:
        return spans
    decoded, starts, ends = _decoded(data)
    needle = secret.encode()
    for wanted in {needle, bytes(_decoded(needle)[0])}:
        at = decoded.find(wanted)
        while at >= 0:
            spans.append((starts[at], ends[at + len(wanted) - 1]))
            at = decoded.find(wanted, at + 1)
    return spans


HEX: Final = frozenset(b"0123456789abcdefABCDEF")
PERCENT: Final = 0x25


def _decoded(data: bytes) -> tuple[bytearray, list[int], list[int]]:
    """`data` %-decoded until nothing more decodes (`%2541` is `A`), and for each byte of
    the result the span of `data` it came from. In one pass: a `%XX` formed at the end of
    what has been decoded so far is decoded at once."""
    out = bytearray()
    starts: list[int] = []
    ends: list[int] = []
    at, size = 0, len(data)
    while at < size:
        if PERCENT not in out[-2:]:  # nothing pending: copy up to the next % at once
            following = data.find(b"%", at)
            following = size if following < 0 else following
            if following > at:
                out += data[at:following]
                starts.extend(range(at, following))
                ends.extend(range(at + 1, following + 1))
                at = following
                continue
        out.append(data[at])
        starts.append(at)
        ends.append(at + 1)
        at += 1
        while len(out) >= 3 and out[-3] == PERCENT and out[-2] in HEX and out[-1] in HEX:
            value = int(out[-2:], 16)
            start, end = starts[-3], ends[-1]
            del out[-3:], starts[-3:], ends[-3:]
            out.append(value)
            starts.append(start)
            ends.append(end)
    return out, starts, ends


WIDE: Final = (("utf-16-le", 2, 0), ("utf-16-be", 2, 1), ("utf-32-le", 4, 0), ("utf-32-be", 4, 3))


def _wide_spans(data: bytes, secret: str) -> list[tuple[int, int, bytes]]:
    """The secret's spellings in ASCII carried as UTF-16 or UTF-32 code units: each unit
    whose other bytes are zero is read as its ASCII byte, any other as 0xFF."""
    found = []
    for codec, width, low in WIDE:
        replacement = REDACTED.decode().encode(codec)
        for offset in range(width):
            units = [data[offset + byte :: width] for byte in range(width)]
            count = min(len(unit) for unit in units)
            ascii_ = bytearray(units[low][:count])
            for byte, unit in enumerate(units):
                if byte != low:
                    for nonzero in re.finditer(rb"[^\x00]", unit[:count]):
                        ascii_[nonzero.start()] = 0xFF
            ascii_ = ascii_.replace(b"\x00", b"\xff")  # a zero unit is no ASCII text either
            found += [
                (offset + start * width, offset + end * width, replacement)
                for start, end in _spans(bytes(ascii_), secret)
            ]
    return found


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
