"""How the worker's records leave: call events with their envelope headers, dead letters,
and the call store's changelog on the partition of the source record.

A batch's call events and its changelog records go out as one Kafka record batch per
partition (aiokafka's `create_batch`/`send_batch`), through a producer of the worker's own
(acks from all replicas, idempotent): no future, partitioner call and accumulator step per
record, and one wait per partition for the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from connector import clients, deadletters, envelope, registry, wire
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import heartbeat

Framer = Callable[[str, bytes], Awaitable[bytes]]
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]  # key, value, headers
MAX_BATCH_BYTES: Final = 1024 * 1024


def framer(settings: Settings, names: TopicNames) -> Framer | None:
    """How a value leaves: None for plain JSON (nothing more per record), or a function
    that frames it with its schema's registry id (NXCLOUD_REGISTRY_WIRE_FORMAT), waiting
    for the registry while it cannot give the id. A reason left by an earlier run goes."""
    ids, not_ready = registry.ids(settings, names), settings.worker_data_dir / heartbeat.NOT_READY
    not_ready.unlink(missing_ok=True)
    if ids is None:
        return None

    async def framed(topic: str, value: bytes) -> bytes:
        schema_id = ids.known(topic)
        if schema_id is None:
            schema_id = await registry.patiently(lambda: ids.of(topic), asyncio.sleep, not_ready)
        return wire.frame(schema_id, value)

    return framed


class Output:
    def __init__(self, settings: Settings, names: TopicNames, changelog: str) -> None:
        self.settings, self.names, self.changelog = settings, names, changelog
        self.framed, self.source = framer(settings, names), envelope.source(settings)
        self.partitioner = DefaultPartitioner()
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(**clients.options(
            self.settings, acks="all", enable_idempotence=True, linger_ms=0,
            max_batch_size=MAX_BATCH_BYTES,
        ))  # fmt: skip
        await self.producer.start()

    async def restart(self) -> None:
        """A producer made anew (one Kafka failed may be in a state it cannot leave)."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    def _running(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the worker's output is not started")
        return self.producer

    async def _value(self, topic: str, value: bytes) -> bytes:
        return value if self.framed is None else await self.framed(topic, value)

    async def events(self, events: Iterable[dict[str, Any]]) -> list[Awaitable[Any]]:
        """The call events, keyed by call, each on the partition its key gives (as any
        producer's default partitioner would put it); the futures of their batches."""
        producer, topic = self._running(), self.names.call_events
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[Record]] = {}
        for event in events:
            key = event["call_id"].encode()
            value = await self._value(topic, orjson.dumps(event))
            partition = self.partitioner(key, partitions, partitions)
            by_partition.setdefault(partition, []).append(
                (key, value, envelope.headers(event, self.source))
            )
        return [
            future
            for partition, records in by_partition.items()
            for future, _ in await self._send(topic, partition, records)
        ]

    async def changes(self, partition: int, changes: Iterable[tuple[bytes, bytes | None]]) -> int:
        """The changes sent to the changelog partition and acknowledged: the last offset."""
        records: list[Record] = [(call_id, state, []) for call_id, state in changes]
        offset = -1
        for future, count in await self._send(self.changelog, partition, records):
            meta = await future
            offset = max(offset, meta.offset + count - 1)
        return offset

    async def _send(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[Awaitable[Any], int]]:
        """Record batches to one partition: the future of each, and how many records it holds."""
        producer, sent = self._running(), []
        batch, count = producer.create_batch(), 0
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                sent.append((await producer.send_batch(batch, topic, partition=partition), count))
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record too large for a batch of {topic}")
            count += 1
        if count:
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
        return sent

    async def dead_letter(
        self, reason: str, topic: str, partition: int, offset: int, value: bytes
    ) -> Awaitable[Any]:
        letter = deadletters.unusable_record(reason, topic, partition, offset, value)
        dead_letter = self.names.dead_letter
        sent: Awaitable[Any] = await self._running().send(
            dead_letter, await self._value(dead_letter, letter)
        )
        return sent
