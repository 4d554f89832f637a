"""A table's changelog partitions read straight from Kafka for a restore: a plain aiokafka
consumer (no group, no Faust events, no deserializers) from each partition's first offset
to its end, handed over batch by batch as fetched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

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
) -> AsyncIterator[tuple[list[Change], set[TP]]]:
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
    async with consumer:
        consumer.assign(list(ours))
        for theirs, tp in ours.items():
            consumer.seek(theirs, spans[tp][0])
        pending = {theirs for theirs, tp in ours.items() if spans[tp][0] < spans[tp][1]}
        if len(pending) < len(ours):
            yield [], {ours[theirs] for theirs in ours.keys() - pending}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=BATCH)
            changes: list[Change] = []
            for theirs, records in fetched.items():
                tp = ours[theirs]
                partition, end = tp.partition, spans[tp][1]
                changes += [
                    Change(tp, partition, record.offset, record.key, record.value)
                    for record in records
                    if record.offset < end
                ]
            finished = set()
            for theirs in list(pending):
                if await consumer.position(theirs) >= spans[ours[theirs]][1]:
                    pending.discard(theirs)
                    consumer.pause(theirs)
                    finished.add(ours[theirs])
            if changes or finished:
                yield changes, finished
