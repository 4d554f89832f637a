"""A table's changelog partitions read straight from Kafka for a restore, and written
straight into the table's store.

The reader is a plain aiokafka consumer (no group, no Faust events, no deserializers)
from each partition's first offset to its end, handing records over batch by batch as
fetched. Into Faust's RocksDB store (rocksdict) a batch goes as one write batch per
partition with the offset Faust keeps in it (so what is on disk and the offset always
agree) and without the write-ahead log, which `flush` makes up for: the restore flushes
what it wrote before anything else writes to the store. Other stores take Faust's
`apply_changelog_batch`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, EventT
from faust.types.tables import CollectionT

from connector import admin

Records = list[ConsumerRecord[bytes, bytes]]

MIB: Final = 1024 * 1024
FETCH_BYTES: Final = 8 * MIB  # per partition and fetch
BATCH: Final = 10_000  # records handed over at a time, at most


@dataclass(slots=True)
class Change:
    """One changelog record in the shape Faust's `apply_changelog_batch` reads an event:
    its own `message`."""

    tp: TP
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def message(self) -> Change:
        return self


async def read(
    options: Mapping[str, Any], spans: Mapping[TP, tuple[int, int]]
) -> AsyncIterator[tuple[dict[TP, Records], set[TP]]]:
    """Each partition's records from `start` up to `end` (exclusive) for `spans[tp] ==
    (start, end)`, in offset order per partition: each batch with the partitions it
    finished. Records at or past a partition's end are left out."""
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES * max(1, len(spans)),
    )
    ours = {TopicPartition(tp.topic, tp.partition): tp for tp in spans}
    async with admin.running(consumer):
        consumer.assign(list(ours))
        for theirs, tp in ours.items():
            consumer.seek(theirs, spans[tp][0])
        pending = {theirs for theirs, tp in ours.items() if spans[tp][0] < spans[tp][1]}
        if len(pending) < len(ours):
            yield {}, {ours[theirs] for theirs in ours.keys() - pending}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=BATCH)
            batches: dict[TP, Records] = {}
            for theirs, records in fetched.items():
                tp = ours[theirs]
                end = spans[tp][1]
                kept = records
                if records and records[-1].offset >= end:
                    kept = [record for record in records if record.offset < end]
                if kept:
                    batches[tp] = kept
            finished = set()
            for theirs in list(pending):
                if await consumer.position(theirs) >= spans[ours[theirs]][1]:
                    pending.discard(theirs)
                    consumer.pause(theirs)
                    finished.add(ours[theirs])
            if batches or finished:
                yield batches, finished


def write(table: CollectionT, tp: TP, records: Records) -> Any:
    """One partition's records into the table's store with the offset Faust keeps: the
    RocksDB database written to (for `flush`), or None."""
    store = getattr(table, "data", None)
    if isinstance(store, RocksDBStore) and store.use_rocksdict:
        import rocksdict  # the rocksdict extra: only a worker on rocksdb:// gets here

        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        batch.put(store.offset_key, str(records[-1].offset).encode())
        options = rocksdict.WriteOptions()
        options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property
        db = store._db_for_partition(tp.partition)
        db.write(batch, options)
        return db
    partition = tp.partition
    changes = [Change(tp, partition, record.offset, record.key, record.value) for record in records]
    table.apply_changelog_batch(cast(list[EventT[Any]], changes))
    return None


def flush(databases: Iterable[Any]) -> None:
    """What `write` put in each RocksDB database, to disk (it skipped the log)."""
    for db in databases:
        db.flush()
