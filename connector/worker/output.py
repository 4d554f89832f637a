"""How the worker's records leave: call events with their envelope headers, dead letters,
and the call store's changelog on the partition of the source record.

Each send hands back the future of its acknowledgement, so a batch shares one wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faust.types import RecordMetadata
from faust.types.transports import ProducerT

from connector import deadletters, envelope, registry, wire
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import heartbeat

Acked = Awaitable[RecordMetadata]
Framer = Callable[[str, bytes], Awaitable[bytes]]


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
    def __init__(
        self, producer: ProducerT, settings: Settings, names: TopicNames, changelog: str
    ) -> None:
        self.producer, self.names, self.changelog = producer, names, changelog
        self.framed, self.source = framer(settings, names), envelope.source(settings)

    async def _value(self, topic: str, value: bytes) -> bytes:
        return value if self.framed is None else await self.framed(topic, value)

    async def event(self, event: dict[str, Any]) -> Acked:
        topic = self.names.call_events
        value = await self._value(topic, orjson.dumps(event))
        return await self.producer.send(topic, event["call_id"].encode(), value, None, None,
                                        envelope.headers(event, self.source))  # fmt: skip

    async def dead_letter(
        self, reason: str, topic: str, partition: int, offset: int, value: bytes
    ) -> Acked:
        letter = deadletters.unusable_record(reason, topic, partition, offset, value)
        dead_letter = self.names.dead_letter
        return await self.producer.send(dead_letter, None, await self._value(dead_letter, letter),
                                        None, None, None)  # fmt: skip

    async def change(self, partition: int, call_id: bytes, state: bytes | None) -> Acked:
        return await self.producer.send(self.changelog, call_id, state, partition, None, None)
