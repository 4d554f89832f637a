"""The call store's changelog partitions read straight from Kafka, from where a store
stands to the end the topic had when the read began.

A plain aiokafka consumer (no group, no Faust, no deserializers) hands records over batch
by batch as fetched, large fetches, each partition paused once it reached its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from connector import admin

Records = list[ConsumerRecord[bytes, bytes]]

MIB: Final = 1024 * 1024
FETCH_BYTES: Final = 8 * MIB  # per partition and fetch
BATCH: Final = 10_000  # records handed over at a time, at most


async def ends(options: Mapping[str, Any], topic: str, partitions: list[int]) -> dict[int, int]:
    """Each partition's end: the offset its next record will take."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    async with admin.running(consumer):
        found = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    return {tp.partition: offset for tp, offset in found.items()}


async def read(
    options: Mapping[str, Any], topic: str, spans: Mapping[int, tuple[int, int]]
) -> AsyncIterator[tuple[dict[int, Records], set[int]]]:
    """Each partition's records from `start` up to `end` (exclusive) for `spans[p] ==
    (start, end)`, in offset order per partition: each batch with the partitions it
    finished. A start below the partition's first record reads from that record."""
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES * max(1, len(spans)),
    )
    ours = {TopicPartition(topic, p): p for p in spans}
    async with admin.running(consumer):
        consumer.assign(list(ours))
        for theirs, p in ours.items():
            consumer.seek(theirs, spans[p][0])
        pending = {theirs for theirs, p in ours.items() if spans[p][0] < spans[p][1]}
        if len(pending) < len(ours):
            yield {}, {ours[theirs] for theirs in ours.keys() - pending}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=BATCH)
            batches: dict[int, Records] = {}
            for theirs, records in fetched.items():
                p = ours[theirs]
                end = spans[p][1]
                kept = records
                if records and records[-1].offset >= end:
                    kept = [record for record in records if record.offset < end]
                if kept:
                    batches[p] = kept
            finished = set()
            for theirs in list(pending):
                if await consumer.position(theirs) >= spans[ours[theirs]][1]:
                    pending.discard(theirs)
                    consumer.pause(theirs)
                    finished.add(ours[theirs])
            if batches or finished:
                yield batches, finished
