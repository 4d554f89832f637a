"""The worker's table of calls: a Faust table that takes changes made for a batch of
records and from a timer, not only for the one record a stream is processing."""

from __future__ import annotations

import weakref
from typing import Any, cast

import faust
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.types import TP, EventT


class CallTable(faust.Table):  # type: ignore[type-arg]
    forgetting_in: int | None = None

    def put(self, record: EventT[bytes], key: bytes, value: bytes) -> None:
        """Store `value` as if while processing `record`, a record of this key: Faust
        files a change (store and changelog) under the partition of the current record, and
        refuses one made outside stream iteration, as for a batch (faust-streaming#300)."""
        token = _current_event.set(weakref.ref(record))
        try:
            self[key] = value
        finally:
            _current_event.reset(token)

    def forget(self, key: bytes, partition: int) -> None:
        """Delete `key`, which lives on `partition`, outside any record (the expiry timer;
        faust-streaming#300)."""
        self.forgetting_in = partition
        try:
            del self[key]
        finally:
            self.forgetting_in = None

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        """A memory store starts every assignment afresh from the whole changelog. Faust
        resumes reading a changelog where it stopped, and its memory store came out of
        repeated rebalances missing keys the changelog holds (calls restarted at
        revision 1 under repeated worker kills; the nearest change upstream,
        faust-streaming#199, clears the keys that changed owner)."""
        if isinstance(self.data, MemoryStore):
            self.data.data.clear()
            self.data._key_partition.clear()
            recovery = cast(TableManager, self.app.tables).recovery
            for offsets in (recovery.active_offsets, recovery.standby_offsets):
                for tp in [tp for tp in offsets if tp.topic == self.changelog_topic_name]:
                    del offsets[tp]
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def partition_for_key(self, key: Any) -> int | None:
        """The partition `forget` names, where no record is current to give one."""
        if self.forgetting_in is not None:
            return self.forgetting_in
        partition: int | None = super().partition_for_key(key)
        return partition
