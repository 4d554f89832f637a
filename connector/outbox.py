"""Records bound for Kafka, handed to the producer one batch per partition.

Sending record by record costs the worker more than all of its own work (each `send()`
is a coroutine, a partitioner call and an accumulator insert): batching the output of a
`take_events()` batch doubles what one worker processes. Records land on the partitions
the producer's own partitioner picks for their keys, so keyed records go exactly where
`send()` would put them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


async def send(
    producer: AIOKafkaProducer,
    records: Iterable[Outgoing],
    on_failure: Callable[[BaseException], None],
) -> None:
    """Queue `records` on the producer; `on_failure` hears of any batch not delivered.

    Returns once every record is in the producer's accumulator, not once delivered: a
    commit must flush the producer first (faust does).
    """
    by_partition: dict[tuple[str, int], list[Outgoing]] = defaultdict(list)
    known: set[str] = set()
    for record in records:
        if record.topic not in known:
            await producer.client._wait_on_metadata(record.topic)
            known.add(record.topic)
        partition = producer._partition(record.topic, None, None, None, record.key, record.value)
        by_partition[record.topic, partition].append(record)
    for (topic, partition), pending in by_partition.items():
        batch = producer.create_batch()
        for record in pending:
            while batch.append(
                timestamp=None, key=record.key, value=record.value, headers=list(record.headers)
            ) is None:  # fmt: skip
                await _submit(producer, batch, topic, partition, on_failure)
                batch = producer.create_batch()
        await _submit(producer, batch, topic, partition, on_failure)


async def _submit(
    producer: AIOKafkaProducer,
    batch: Any,
    topic: str,
    partition: int,
    on_failure: Callable[[BaseException], None],
) -> None:
    delivery = await producer.send_batch(batch, topic, partition=partition)

    def delivered(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            on_failure(error)

    delivery.add_done_callback(delivered)
