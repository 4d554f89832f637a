"""Spool frames: `magic | length | body-crc | header-crc | body`, the body
`topic-length | topic | key-length | key | value`.

The header checksum lets a reader find the next valid frame after damage. Pure: bytes in,
entries and damaged spans out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAGIC: Final = b"NXS\x01"
HEADER: Final = struct.Struct(">4sIII")
SHORT: Final = struct.Struct(">H")
LONG: Final = struct.Struct(">I")
NO_KEY: Final = 0xFFFFFFFF
MAX_FRAME: Final = 16 << 20
CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class Entry:
    topic: str
    key: bytes | None
    value: bytes
    segment: int = 0
    end: int = 0


@dataclass(frozen=True)
class Damage:
    """Bytes of a segment that hold no valid frame; `kept` is their quarantine copy."""

    segment: int
    start: int
    end: int
    kept: Path | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


def encode(topic: str, key: bytes | None, value: bytes) -> bytes:
    name = topic.encode()
    key_bytes = b"" if key is None else key
    key_length = NO_KEY if key is None else len(key_bytes)
    return frame(SHORT.pack(len(name)) + name + LONG.pack(key_length) + key_bytes + value)


def frame(body: bytes) -> bytes:
    head = MAGIC + LONG.pack(len(body)) + LONG.pack(zlib.crc32(body))
    return head + LONG.pack(zlib.crc32(head)) + body


def _entry(body: bytes, segment: int, end: int) -> Entry:
    (name_length,) = SHORT.unpack_from(body, 0)
    topic = body[2 : 2 + name_length].decode()
    offset = 2 + name_length
    (key_length,) = LONG.unpack_from(body, offset)
    offset += LONG.size
    key = None if key_length == NO_KEY else body[offset : offset + key_length]
    offset += 0 if key is None else key_length
    if offset > len(body):
        raise ValueError("frame body shorter than its key")
    return Entry(topic, key, body[offset:], segment, end)


class Frames:
    """An incremental decoder of one segment: feed bytes, get entries and damage in order."""

    def __init__(self, segment: int, start: int = 0) -> None:
        self.segment = segment
        self._buffer = bytearray()
        self._base = start
        self._damage_from: int | None = None

    @property
    def position(self) -> int:
        """Where the next undecoded byte is; damage in progress counts as undecoded."""
        return self._base if self._damage_from is None else self._damage_from

    def feed(self, data: bytes) -> list[Entry | Damage]:
        buffer = self._buffer
        buffer += data
        out: list[Entry | Damage] = []
        at = 0
        while len(buffer) - at >= HEADER.size:
            magic, length, body_crc, head_crc = HEADER.unpack_from(buffer, at)
            head_ok = (
                magic == MAGIC
                and length <= MAX_FRAME
                and zlib.crc32(buffer[at : at + HEADER.size - LONG.size]) == head_crc
            )
            if not head_ok:
                if self._damage_from is None:
                    self._damage_from = self._base + at
                found = buffer.find(MAGIC, at + 1)
                at = found if found != -1 else max(at + 1, len(buffer) - len(MAGIC) + 1)
                if found == -1:
                    break
                continue
            end = at + HEADER.size + length
            if end > len(buffer):
                break
            if self._damage_from is not None:
                out.append(Damage(self.segment, self._damage_from, self._base + at))
                self._damage_from = None
            body = bytes(buffer[at + HEADER.size : end])
            out.append(self._decode(body, body_crc, self._base + at, self._base + end))
            at = end
        del buffer[:at]
        self._base += at
        return out

    def _decode(self, body: bytes, checksum: int, start: int, end: int) -> Entry | Damage:
        if zlib.crc32(body) == checksum:
            try:
                return _entry(body, self.segment, end)
            except (ValueError, UnicodeDecodeError, struct.error):
                pass
        return Damage(self.segment, start, end)

    def finish(self) -> Damage | None:
        """At the end of the segment: whatever is left is damage (or a torn tail)."""
        end = self._base + len(self._buffer)
        start = self.position
        self._buffer.clear()
        self._base, self._damage_from = end, None
        return Damage(self.segment, start, end) if end > start else None


def scan(path: Path, segment: int, start: int = 0) -> Iterator[Entry | Damage]:
    """Every entry and damaged span of a segment file from `start`, read in chunks."""
    frames = Frames(segment, start)
    with path.open("rb") as source:
        source.seek(start)
        while chunk := source.read(CHUNK):
            yield from frames.feed(chunk)
    tail = frames.finish()
    if tail is not None:
        yield tail
