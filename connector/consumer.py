"""The worker's Kafka consumer: Faust's, without the ways it loses records in a rebalance.

After a rebalance Faust seeks each partition to its committed offset, and three things go
wrong (faust-streaming issues 216, 221, 606; seen here under repeated worker kills):

- A partition with no committed offset yet is not sought at all (aiokafka's
  `seek_to_committed` skips it), so records fetched before the rebalance and cleared
  from Faust's queues are never read again. Here it is sought to its beginning.
- A record fetched before the seek can still arrive after it. Faust takes the jump from
  the read position to that record for a gap in the topic (real only on compacted or
  transactional topics), counts the records in between as processed, commits past them
  and drops them when they are fetched again. Here that record is dropped instead and
  the partition sought back, so the records in between are read. A real gap shows up
  again at the same offset and is let through.
- A record that reaches a stream while the rebalance holds the flow is skipped unread,
  yet acknowledged: its offset can be committed and, once the worker dies, it is never
  read. Here only a record a stream took in (tracked) counts as processed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from faust.transport.drivers import aiokafka
from faust.types import TP, Message

log = logging.getLogger(__name__)


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.next_offsets: dict[TP, int] = {}
        self.jumped_to: dict[TP, int] = {}

    def ack(self, message: Message) -> bool:
        if not message.tracked:
            message.acked = True
            return False
        acked: bool = super().ack(message)
        return acked

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: dict[TP, int | None] = dict(await super().seek_to_committed())
        unread = [tp for tp, offset in committed.items() if not offset]
        if unread:
            await self._thread.seek_to_beginning(*unread)
            for tp in unread:
                committed[tp] = await self._thread.position(tp)
        self.next_offsets.update(
            {tp: offset for tp, offset in committed.items() if offset is not None}
        )
        return cast(Mapping[TP, int], committed)  # Faust's annotation; None is allowed

    async def _seek(self, partition: TP, offset: int) -> None:
        self.next_offsets[partition] = offset
        await super()._seek(partition, offset)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 (Faust's signature)
        sought: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp in sought:
                continue
            expected = self.next_offsets.get(tp)
            if expected is not None and message.offset > expected and self._stale(tp, message):
                log.warning(
                    "a record ahead of the read position: reading from the position again",
                    extra={"topic": tp.topic, "partition": tp.partition,
                           "position": expected, "offset": message.offset},
                )  # fmt: skip
                self.jumped_to[tp] = message.offset
                sought.add(tp)
                await self.seek(tp, expected)
                continue
            if expected is None or message.offset >= expected:
                self.next_offsets[tp] = message.offset + 1
            yield tp, message

    def _stale(self, tp: TP, message: Message) -> bool:
        acked: bool = self.app.topics.acks_enabled_for(message.topic)
        return acked and self.jumped_to.get(tp) != message.offset
