"""The reconciler's stores: parts, groups and offsets written together, kept across a
reopen (RocksDB), and the parts of old days forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector import reconciliation as rec
from connector.reconciler.store import MemoryStore, RocksStore, Store
from tests.reconciliation_helpers import RULES, the_day


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_a_batch_is_kept_whole_and_old_days_parts_are_forgotten(kind: str, tmp_path: Path) -> None:
    store: Store = MemoryStore() if kind == "memory" else RocksStore(tmp_path / "rocks")
    pieces = [rec.part(event, RULES) for event in the_day().values()]
    slots: rec.Slots = {}
    for piece in pieces:
        rec.put(slots, piece)
    parts = {piece.call_id: rec.encode_part(piece) for piece in pieces}
    group = pieces[0].group.key
    store.write(parts, {group: rec.encode_slots(slots)}, {("events", 0): 12, ("events", 1): 7})
    if kind == "rocksdb":
        store.close()
        store = RocksStore(tmp_path / "rocks")
    assert store.offsets() == {("events", 0): 12, ("events", 1): 7}
    assert dict(store.groups()) == {group: rec.encode_slots(slots)}
    assert all(store.part(call) == data for call, data in parts.items())
    assert store.prune("2026-11-23") == 0
    assert store.prune("2026-11-24") == len(parts)
    assert all(store.part(call) is None for call in parts)
    assert dict(store.groups()) == {group: rec.encode_slots(slots)}  # the figures stay
    store.write({}, {group: None}, {})
    assert dict(store.groups()) == {}
    store.close()
