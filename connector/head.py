"""HTTP/1.x request heads as the bytes a client sent. Pure.

A lenient reading of the request line: the method is the first token, the version the
last, and everything between is the target, with raw spaces and bytes >= 0x80 percent-encoded
so that a strict parser takes the request as the provider meant it.
"""

from __future__ import annotations

import re
from typing import Final

HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
LINE_END: Final = re.compile(rb"\r?\n")
VERSION: Final = re.compile(rb"HTTP/1\.[0-9]")
UNSAFE: Final = re.compile(rb"[ \x80-\xff]")


def end_of_head(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """The offset just past the blank line that ends the head, or None while it has not come."""
    match = HEAD_END.search(buffer, max(0, start - 3))
    return None if match is None else match.end()


def line_count(buffer: bytes | bytearray) -> int:
    """Lines begun so far, the request line included."""
    return buffer.count(b"\n") + (0 if buffer.endswith(b"\n") else 1)


def request_line(head: bytes) -> bytes:
    return LINE_END.split(head, maxsplit=1)[0]


def _parts(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    method, space, rest = line.partition(b" ")
    target, space_before_version, version = rest.rpartition(b" ")
    target = target.lstrip(b" ")
    if not (method and space and space_before_version) or not VERSION.fullmatch(version):
        return None
    if not target.startswith((b"/", b"http://", b"https://")):
        return None
    return method, target, version


def target(head: bytes) -> bytes:
    """The request target exactly as sent (raw spaces and all), b"" when there is none."""
    parts = _parts(request_line(head))
    return b"" if parts is None else parts[1]


def repair_target(line: bytes) -> bytes:
    """`line` with raw spaces and bytes >= 0x80 of its target percent-encoded.

    A line that does not end in an HTTP/1.x version, or whose target is not a path or an
    http(s) URL, is returned unchanged: the parser refuses it, and the refusal is
    dead-lettered.
    """
    parts = _parts(line)
    if parts is None:
        return line
    method, raw_target, version = parts
    encoded = UNSAFE.sub(lambda match: b"%%%02X" % match.group()[0], raw_target)
    return b"%s %s %s" % (method, encoded, version)


def repair(head: bytes) -> bytes:
    """The head with its request line repaired (`repair_target`), the rest untouched."""
    line = request_line(head)
    return repair_target(line) + head[len(line) :]


def method(head: bytes) -> str:
    """The first token of the request line, as far as it is printable ASCII."""
    token = request_line(head).partition(b" ")[0]
    return token.decode("ascii", errors="replace")[:32] if token.isascii() else ""


def body_length(head: bytes) -> int | None:
    """The body's length as the head declares it: 0 without a body, None when it is chunked
    or the declared lengths are not one whole number (the parser then decides)."""
    lengths: set[bytes] = set()
    for line in LINE_END.split(head)[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
    if not lengths:
        return 0
    if len(lengths) != 1:
        return None
    (length,) = lengths
    return int(length) if length.isdigit() and length.isascii() else None
