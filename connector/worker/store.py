"""The worker's call store: per source partition, each call's encoded state keyed by its
`call_id`, and the changelog offset that state reached, written together.

`memory://` keeps a partition in a dict (the local run and the tests; a restart reads the
changelog again); `rocksdb://` in its own RocksDB (rocksdict) under the data directory,
each batch one WriteBatch with the offset in it, so what is on disk and where the next
catch-up starts always agree (quix-streams' `state/rocksdb/partition.py` does the same).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from connector import rocks

OFFSET_KEY: Final = b"\0offset"  # a call_id is printable: no call is keyed so
MIB: Final = 1024 * 1024
# Per partition: small memtables and caches keep the worker's memory flat as state grows
# (bench/worker.py's memory run).
WRITE_BUFFER_BYTES: Final = 8 * MIB
WRITE_BUFFERS: Final = 2
BLOCK_CACHE_BYTES: Final = 16 * MIB

Changes = Mapping[bytes, bytes | None]  # call_id: state, or None to forget the call


class Partition(Protocol):
    offset: int  # the last changelog offset applied, -1 before any

    def get(self, call_id: bytes) -> bytes | None: ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...

    def write(self, changes: Changes, offset: int, *, logged: bool = True) -> None:
        """The changes and the offset they reach, all or (killed at any moment) none;
        not `logged`, a kill may lose them (all of them) until `flush`."""

    def flush(self) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class MemoryPartition:
    def __init__(self) -> None:
        self.calls: dict[bytes, bytes] = {}
        self.offset = -1

    def get(self, call_id: bytes) -> bytes | None:
        return self.calls.get(call_id)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self.calls.items())

    def write(self, changes: Changes, offset: int, *, logged: bool = True) -> None:
        calls = self.calls
        for call_id, state in changes.items():
            if state is None:
                calls.pop(call_id, None)
            else:
                calls[call_id] = state
        self.offset = max(self.offset, offset)

    def flush(self) -> None:
        return None

    def clear(self) -> None:
        self.calls.clear()
        self.offset = -1

    def close(self) -> None:
        self.calls.clear()


class RocksPartition:
    def __init__(self, path: Path) -> None:
        self._rocksdict, self.path = rocks.rocksdict("NXCLOUD_WORKER_STORE"), path
        self._db = self._open()
        found = self._db.get(OFFSET_KEY)
        self.offset = -1 if found is None else int(found)

    def _open(self) -> Any:
        rocksdict = self._rocksdict
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(WRITE_BUFFERS)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(BLOCK_CACHE_BYTES))
        table.set_bloom_filter(10, True)
        options.set_block_based_table_factory(table)
        self.path.mkdir(parents=True, exist_ok=True)
        return rocksdict.Rdict(str(self.path), options)

    def get(self, call_id: bytes) -> bytes | None:
        found: bytes | None = self._db.get(call_id)
        return found

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            if key != OFFSET_KEY:
                yield key, value

    def write(self, changes: Changes, offset: int, *, logged: bool = True) -> None:
        batch = self._rocksdict.WriteBatch(raw_mode=True)
        for call_id, state in changes.items():
            if state is None:
                batch.delete(call_id)
            else:
                batch.put(call_id, state)
        if offset > self.offset:
            batch.put(OFFSET_KEY, str(offset).encode())
        if logged:
            self._db.write(batch)
        else:
            unlogged = self._rocksdict.WriteOptions()
            unlogged.disable_wal = True
            self._db.write(batch, unlogged)
        self.offset = max(self.offset, offset)

    def flush(self) -> None:
        self._db.flush()

    def clear(self) -> None:
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db, self.offset = self._open(), -1

    def close(self) -> None:
        self._db.flush()  # what a catch-up wrote without the log
        self._db.close()


class Store:
    """The partitions this worker holds, opened on assignment and closed when they go."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url, self.directory = url, directory
        self.partitions: dict[int, Partition] = {}

    def open(self, partition: int) -> Partition:
        held = self.partitions.get(partition)
        if held is None:
            held = self.partitions[partition] = (
                RocksPartition(self.directory / str(partition))
                if self.url.startswith("rocksdb")
                else MemoryPartition()
            )
        return held

    def close(self, partition: int) -> None:
        held = self.partitions.pop(partition, None)
        if held is not None:
            held.close()

    def close_all(self) -> None:
        for partition in list(self.partitions):
            self.close(partition)

    def get(self, partition: int, call_id: bytes) -> bytes | None:
        return self.partitions[partition].get(call_id)

    def write(self, partition: int, changes: Changes, offset: int) -> None:
        self.partitions[partition].write(changes, offset)

    def restore(self, partition: int, changes: Changes, offset: int) -> None:
        """A catch-up's write: without RocksDB's write-ahead log, made durable by `flush`
        before the partition takes any other write (a kill before it keeps a prefix of
        the catch-up's batches, the offset with them, from which the next one goes on)."""
        self.partitions[partition].write(changes, offset, logged=False)

    def flush(self, partition: int) -> None:
        self.partitions[partition].flush()
