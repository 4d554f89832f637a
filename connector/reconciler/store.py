"""The reconciler's state: each call's part, each group's sums, and how far it has read,
written together in one batch, so what it holds and where it goes on always agree.

`memory://` keeps it in dicts (gone at a restart: the reconciler reads the call-event topic
from its start again); `rocksdb://` in RocksDB through rocksdict, one WriteBatch per batch
of call events (quix-streams keeps its state and processed offsets the same way).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from connector import rocks

PART, GROUP, OFFSET = b"p", b"g", b"o"


class Store(Protocol):
    def part(self, call_id: str) -> bytes | None: ...

    def groups(self) -> Iterator[tuple[str, bytes]]: ...

    def offsets(self) -> dict[tuple[str, int], int]: ...

    def write(
        self,
        parts: Mapping[str, bytes],
        groups: Mapping[str, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """All of it, or (killed at any moment) none of it."""

    def prune(self, before: str) -> int:
        """Forget the parts of calls of days before `before` (YYYY-MM-DD); how many."""

    def close(self) -> None: ...


def _day_of(part: bytes) -> str:
    """The day of a stored part: its JSON starts `{"group":"YYYY-MM-DD|`."""
    return part[10:20].decode()


class MemoryStore:
    def __init__(self) -> None:
        self._parts: dict[str, bytes] = {}
        self._groups: dict[str, bytes] = {}
        self._offsets: dict[tuple[str, int], int] = {}

    def part(self, call_id: str) -> bytes | None:
        return self._parts.get(call_id)

    def groups(self) -> Iterator[tuple[str, bytes]]:
        yield from list(self._groups.items())

    def offsets(self) -> dict[tuple[str, int], int]:
        return dict(self._offsets)

    def write(
        self,
        parts: Mapping[str, bytes],
        groups: Mapping[str, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        self._parts.update(parts)
        for key, value in groups.items():
            if value is None:
                self._groups.pop(key, None)
            else:
                self._groups[key] = value
        self._offsets.update(offsets)

    def prune(self, before: str) -> int:
        old = [call for call, part in self._parts.items() if _day_of(part) < before]
        for call in old:
            del self._parts[call]
        return len(old)

    def close(self) -> None:
        return None


def _offset_key(topic: str, partition: int) -> bytes:
    return OFFSET + f"{topic}\0{partition}".encode()


class RocksStore:
    """One RocksDB in `path`; keys prefixed p (call_id), g (group key), o (topic, partition)."""

    def __init__(self, path: Path) -> None:
        rocksdict = rocks.rocksdict("NXCLOUD_RECONCILER_STORE")
        path.mkdir(parents=True, exist_ok=True)
        self._db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))

    def part(self, call_id: str) -> bytes | None:
        found: bytes | None = self._db.get(PART + call_id.encode())
        return found

    def _prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            assert isinstance(key, bytes)  # raw mode
            assert isinstance(value, bytes)
            if not key.startswith(prefix):
                return
            yield key[len(prefix) :], value

    def groups(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self._prefixed(GROUP):
            yield key.decode(), value

    def offsets(self) -> dict[tuple[str, int], int]:
        found = {}
        for key, value in self._prefixed(OFFSET):
            topic, _, partition = key.decode().rpartition("\0")
            found[(topic, int(partition))] = int(value)
        return found

    def write(
        self,
        parts: Mapping[str, bytes],
        groups: Mapping[str, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for call_id, value in parts.items():
            batch.put(PART + call_id.encode(), value)
        for key, group in groups.items():
            if group is None:
                batch.delete(GROUP + key.encode())
            else:
                batch.put(GROUP + key.encode(), group)
        for (topic, partition), offset in offsets.items():
            batch.put(_offset_key(topic, partition), str(offset).encode())
        self._db.write(batch)

    def prune(self, before: str) -> int:
        from rocksdict import WriteBatch

        batch, pruned = WriteBatch(raw_mode=True), 0
        for call_id, part in self._prefixed(PART):
            if _day_of(part) < before:
                batch.delete(PART + call_id)
                pruned += 1
        self._db.write(batch)
        return pruned

    def close(self) -> None:
        self._db.close()


def open_store(url: str, path: Path) -> Store:
    return RocksStore(path) if url.startswith("rocksdb") else MemoryStore()
