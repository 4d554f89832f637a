"""A local append-only spool for records Kafka could not take right now.

Frames are `length | crc32 | topic-length | topic | key-length | key | value`. An append
returns only after the bytes are fsync'd; concurrent appends share one write and one
fsync. A torn tail (a crash mid-write) was never acknowledged, so it is dropped on open.
The drained position is kept in a side file; a fully drained spool is truncated.
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connector.errors import SpoolError

HEADER: Final = struct.Struct(">II")
SHORT: Final = struct.Struct(">H")
LONG: Final = struct.Struct(">I")


@dataclass(frozen=True)
class Entry:
    topic: str
    key: bytes | None
    value: bytes
    end: int


def encode(topic: str, key: bytes | None, value: bytes) -> bytes:
    name = topic.encode()
    key_bytes = b"" if key is None else key
    key_length = 0xFFFFFFFF if key is None else len(key_bytes)
    body = SHORT.pack(len(name)) + name + LONG.pack(key_length) + key_bytes + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes, start: int = 0) -> Iterator[Entry]:
    """Every whole, intact frame from `start`; stops at the first torn or corrupt one."""
    position = start
    while position + HEADER.size <= len(data):
        length, checksum = HEADER.unpack_from(data, position)
        body_start = position + HEADER.size
        body = data[body_start : body_start + length]
        if len(body) < length or zlib.crc32(body) != checksum:
            return
        (name_length,) = SHORT.unpack_from(body, 0)
        topic = body[2 : 2 + name_length].decode()
        offset = 2 + name_length
        (key_length,) = LONG.unpack_from(body, offset)
        offset += LONG.size
        key = None if key_length == 0xFFFFFFFF else body[offset : offset + key_length]
        offset += 0 if key is None else key_length
        position = body_start + length
        yield Entry(topic, key, body[offset:], position)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._log = directory / "spool.log"
        self._position = directory / "spool.drained"
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._size = 0
        self._drained = 0
        self._count = 0
        self._writing = 0

    def open(self) -> None:
        """Recover the state on disk, dropping any torn tail."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self._log.read_bytes() if self._log.exists() else b""
        entries = list(decode(data))
        intact = entries[-1].end if entries else 0
        if intact != len(data):
            with self._log.open("r+b") as log:
                log.truncate(intact)
                os.fsync(log.fileno())
        self._size = intact
        self._drained = self._read_position()
        if self._drained > intact:
            self._drained = intact
            self._write_position(intact)
        self._count = sum(1 for entry in entries if entry.end > self._drained)

    @property
    def depth(self) -> int:
        """Records waiting to be drained."""
        return self._count

    @property
    def bytes_used(self) -> int:
        return self._size

    def empty(self) -> bool:
        """Nothing waiting on disk and nothing on its way there."""
        return self._count == 0 and not self._pending and not self._writing

    def usable(self) -> bool:
        return self._size < self.max_bytes and os.access(self.directory, os.W_OK)

    async def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the record is on disk; raise SpoolError if it cannot be."""
        frame = encode(topic, key, value)
        if self._size + len(frame) + sum(len(f) for f, _ in self._pending) > self.max_bytes:
            raise SpoolError("spool is full")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((frame, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await done

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(frame for frame, _ in batch)
            self._writing = len(batch)
            async with self._lock:
                try:
                    await asyncio.to_thread(self._write, data)
                except OSError as exc:
                    self._writing = 0
                    error = SpoolError(f"spool write failed: {exc.strerror or exc}")
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                self._size += len(data)
                self._count += len(batch)
                self._writing = 0
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, data: bytes) -> None:
        with self._log.open("ab") as log:
            log.write(data)
            log.flush()
            os.fsync(log.fileno())

    async def oldest(self, limit: int) -> list[Entry]:
        """Up to `limit` undrained records, oldest first."""
        async with self._lock:
            if self._drained >= self._size:
                return []
            data = await asyncio.to_thread(self._read_from, self._drained)
        entries: list[Entry] = []
        for entry in decode(data):
            entries.append(Entry(entry.topic, entry.key, entry.value, entry.end + self._drained))
            if len(entries) == limit:
                break
        return entries

    async def mark_drained(self, through: Entry, count: int) -> None:
        """Remember that everything up to `through` is in Kafka; truncate once all is."""
        async with self._lock:
            self._drained = through.end
            self._count -= count
            if self._drained >= self._size and not self._pending and not self._writing:
                await asyncio.to_thread(self._reset)
                self._size = self._drained = self._count = 0
            else:
                await asyncio.to_thread(self._write_position, self._drained)

    def _read_from(self, start: int) -> bytes:
        with self._log.open("rb") as log:
            log.seek(start)
            return log.read(self._size - start)

    def _read_position(self) -> int:
        try:
            return int(self._position.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_position(self, position: int) -> None:
        partial = self._position.with_suffix(".tmp")
        with partial.open("w") as output:
            output.write(str(position))
            output.flush()
            os.fsync(output.fileno())
        partial.replace(self._position)

    def _reset(self) -> None:
        self._position.unlink(missing_ok=True)
        with self._log.open("r+b") as log:
            log.truncate(0)
            os.fsync(log.fileno())
