"""A local append-only spool for records Kafka could not take right now.

The spool is a directory of segment files of frames (`connector/frames.py`), read and
drained as a stream: memory does not depend on its size. Damaged bytes are copied to
`quarantine/` and reported. An append returns only after the bytes are fsync'd; concurrent
appends share one write and one fsync. A torn tail (a crash mid-write) was never
acknowledged: it is quarantined and cut on open. The drained position is kept in a side
file; a segment is deleted once all of it is drained, and a fully drained spool starts a
fresh segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from connector.errors import SpoolError
from connector.frames import CHUNK, HEADER, MAX_FRAME, Damage, Entry, Frames, encode, frame, scan

LEGACY: Final = struct.Struct(">II")  # `length | crc32` frames of the single-file spool
SEGMENT_BYTES: Final = 16 << 20


@dataclass
class Batch:
    entries: list[Entry] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    through: tuple[int, int] = (0, 0)


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._segments_dir = directory / "segments"
        self._quarantine = directory / "quarantine"
        self._rejected = directory / "rejected"
        self._position = directory / "drained"
        self._sizes: dict[int, int] = {}
        self._drained = (1, 0)
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._count = 0
        self._writing = 0
        self._reader: _Reader | None = None

    def open(self) -> None:
        """Recover the state on disk: quarantine a torn tail and count what waits."""
        for folder in (self._segments_dir, self._quarantine, self._rejected):
            folder.mkdir(parents=True, exist_ok=True)
        self._import_legacy()
        found = sorted(int(p.stem) for p in self._segments_dir.glob("*.seg") if p.stem.isdigit())
        self._sizes = {seq: self._path(seq).stat().st_size for seq in found}
        if not self._sizes:
            self._create(1)
        seq, offset = self._read_position()
        first = min(self._sizes)
        if seq < first or seq not in self._sizes:
            seq, offset = first, 0
        for old in [s for s in self._sizes if s < seq]:
            self._path(old).unlink()
            del self._sizes[old]
        self._drained = (seq, min(offset, self._sizes[seq]))
        self._cut_torn_tail()
        self._count = sum(
            isinstance(item, Entry)
            for s in sorted(self._sizes)
            for item in scan(self._path(s), s, self._drained[1] if s == seq else 0)
        )
        self._reader = None

    def _import_legacy(self) -> None:
        """Move what an older receiver left undrained in `spool.log` into a segment."""
        legacy, position = self.directory / "spool.log", self.directory / "spool.drained"
        if not legacy.exists():
            return
        try:
            start = int(position.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            start = 0
        found = [int(p.stem) for p in self._segments_dir.glob("*.seg") if p.stem.isdigit()]
        target = self._path(max(found, default=0) + 1)
        with legacy.open("rb") as source, target.open("ab") as output:
            source.seek(start)
            while head := source.read(LEGACY.size):
                if len(head) < LEGACY.size:
                    break
                length, checksum = LEGACY.unpack(head)
                body = source.read(length)
                if len(body) < length or zlib.crc32(body) != checksum:
                    break
                output.write(frame(body))
            output.flush()
            os.fsync(output.fileno())
        _fsync_dir(self._segments_dir)
        legacy.unlink()
        position.unlink(missing_ok=True)

    def _cut_torn_tail(self) -> None:
        last = max(self._sizes)
        path = self._path(last)
        start = self._drained[1] if last == self._drained[0] else 0
        tail: Damage | None = None
        for item in scan(path, last, start):
            tail = item if isinstance(item, Damage) else None
        if tail is not None and tail.end == self._sizes[last]:
            self._keep(tail)
            with path.open("r+b") as log:
                log.truncate(tail.start)
                os.fsync(log.fileno())
            self._sizes[last] = tail.start

    @property
    def depth(self) -> int:
        """Records waiting to be drained."""
        return self._count

    @property
    def bytes_used(self) -> int:
        return sum(self._sizes.values())

    def empty(self) -> bool:
        """Nothing waiting on disk and nothing on its way there."""
        return self._count == 0 and not self._pending and not self._writing

    def room(self) -> int:
        """Bytes an append may still use."""
        return self.max_bytes - self.bytes_used - sum(len(f) for f, _ in self._pending)

    def writable(self) -> bool:
        return os.access(self._segments_dir, os.W_OK)

    async def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the record is on disk; raise SpoolError if it cannot be."""
        frame = encode(topic, key, value)
        if len(frame) - HEADER.size > MAX_FRAME:
            raise SpoolError(f"record of {len(value)} bytes exceeds the spool's frame limit")
        if len(frame) > self.room():
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
                last = max(self._sizes)
                if self._sizes[last] and self._sizes[last] + len(data) > self.segment_bytes:
                    last += 1
                try:
                    await asyncio.to_thread(self._write, last, data)
                except OSError as exc:
                    self._writing = 0
                    error = SpoolError(f"spool write failed: {exc.strerror or exc}")
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                self._sizes[last] = self._sizes.get(last, 0) + len(data)
                self._count += len(batch)
                self._writing = 0
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, seq: int, data: bytes) -> None:
        if not self._path(seq).exists():
            self._create_file(seq)
        descriptor = os.open(self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            before = os.lseek(descriptor, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
                os.fsync(descriptor)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, before)  # no part of a failed write stays
                raise
        finally:
            os.close(descriptor)

    async def read(self, limit: int, max_bytes: int = 8 << 20) -> Batch:
        """The next undrained records after those already read, and any damage among them."""
        if self._reader is None:
            self._reader = _Reader(self, *self._drained)
        return await asyncio.to_thread(self._reader.read, dict(self._sizes), limit, max_bytes)

    def rewind(self) -> None:
        """Read again from the drained position (after a failure mid-batch)."""
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    async def acknowledge(self, batch: Batch) -> None:
        """Everything through `batch` is in Kafka (or set aside): remember it, free segments."""
        async with self._lock:
            self._drained = batch.through
            self._count -= len(batch.entries)
            seq = batch.through[0]
            if self._count <= 0 and not self._pending and not self._writing:
                self._count = 0
                seq = max(self._sizes) + 1
                self.rewind()
                self._drained = (seq, 0)
                await asyncio.to_thread(self._create_file, seq)
                self._sizes[seq] = 0
            await asyncio.to_thread(self._write_position, *self._drained)
            old = [s for s in self._sizes if s < seq]
            for s in old:
                del self._sizes[s]
            await asyncio.to_thread(self._unlink, old)

    def _unlink(self, segments: list[int]) -> None:
        for seq in segments:
            self._path(seq).unlink(missing_ok=True)

    async def oldest(self, limit: int) -> list[Entry]:
        """Up to `limit` undrained records, oldest first, without moving the read position."""
        reader = _Reader(self, *self._drained)
        batch = await asyncio.to_thread(reader.read, dict(self._sizes), limit, 1 << 62, False)
        return batch.entries

    async def set_aside(self, entry: Entry) -> Path:
        """Keep a record Kafka refused on disk, apart from the queue; return where."""
        name = f"{entry.segment:012d}-{entry.end:012d}.frame"
        path = self._rejected / name
        await asyncio.to_thread(_write_file, path, encode(entry.topic, entry.key, entry.value))
        return path

    def _keep(self, damage: Damage) -> Damage:
        path = self._quarantine / f"{damage.segment:012d}-{damage.start:012d}.bad"
        with self._path(damage.segment).open("rb") as source, path.open("wb") as target:
            source.seek(damage.start)
            left = damage.size
            while left > 0 and (chunk := source.read(min(CHUNK, left))):
                target.write(chunk)
                left -= len(chunk)
            target.flush()
            os.fsync(target.fileno())
        return Damage(damage.segment, damage.start, damage.end, path)

    def _path(self, seq: int) -> Path:
        return self._segments_dir / f"{seq:012d}.seg"

    def _create(self, seq: int) -> None:
        self._create_file(seq)
        self._sizes[seq] = 0

    def _create_file(self, seq: int) -> None:
        self._path(seq).touch()
        _fsync_dir(self._segments_dir)

    def _read_position(self) -> tuple[int, int]:
        try:
            seq, offset = self._position.read_text().split()
            return int(seq), int(offset)
        except (FileNotFoundError, ValueError):
            return (0, 0)

    def _write_position(self, seq: int, offset: int) -> None:
        _write_file(self._position.with_suffix(".tmp"), f"{seq} {offset}\n".encode())
        self._position.with_suffix(".tmp").replace(self._position)


class _Reader:
    """The drain's read position: one open segment and its decoder."""

    def __init__(self, spool: Spool, seq: int, offset: int) -> None:
        self._spool = spool
        self._seq = seq
        self._offset = offset
        self._frames = Frames(seq, offset)
        self._file: BinaryIO | None = None
        self._ready: deque[Entry | Damage] = deque()

    def read(self, sizes: dict[int, int], limit: int, max_bytes: int, keep: bool = True) -> Batch:
        batch = Batch()
        used = 0
        while len(batch.entries) < limit and used < max_bytes:
            if not self._ready and not self._fill(sizes):
                break
            while self._ready and len(batch.entries) < limit and used < max_bytes:
                item = self._ready.popleft()
                if isinstance(item, Entry):
                    batch.entries.append(item)
                    used += len(item.value)
                else:
                    batch.damage.append(self._spool._keep(item) if keep else item)
        batch.through = self._through(batch)
        if not keep:
            self.close()
        return batch

    def _through(self, batch: Batch) -> tuple[int, int]:
        marks = [(e.segment, e.end) for e in batch.entries] + [
            (d.segment, d.end) for d in batch.damage
        ]
        return max(marks) if marks else (self._seq, self._frames.position)

    def _fill(self, sizes: dict[int, int]) -> bool:
        """Decode more of the spool; False when nothing more is committed yet."""
        while not self._ready:
            end = sizes.get(self._seq, 0)
            if self._offset < end:
                if self._file is None:
                    self._file = self._spool._path(self._seq).open("rb")
                    self._file.seek(self._offset)
                chunk = self._file.read(min(CHUNK, end - self._offset))
                if not chunk:
                    return False
                self._offset += len(chunk)
                self._ready.extend(self._frames.feed(chunk))
                continue
            later = [s for s in sizes if s > self._seq]
            if not later:
                return False
            tail = self._frames.finish()
            if tail is not None:
                self._ready.append(tail)
            self.close()
            self._seq, self._offset = min(later), 0
            self._frames = Frames(self._seq, 0)
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as output:
        output.write(data)
        output.flush()
        os.fsync(output.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = ["HEADER", "Batch", "Damage", "Entry", "Frames", "Spool", "encode", "scan"]
