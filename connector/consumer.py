"""The worker's Kafka consumer: Faust's, without the ways it loses records or stalls.

After a rebalance Faust seeks each partition to its committed offset, and things go
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
- Faust drops records it fetched while a rebalance changes which partitions it reads
  (records of a partition not active at that moment, or fetched across the flow being
  stopped), though aiokafka has already moved past them; they were never read again and
  the worker seemed stuck (seen while looping the kill test). Here, after each
  fetch, a partition aiokafka read past what was handed on is sought back.
- A seek is made from the main thread, but aiokafka's seek resolves futures of the
  consumer thread's event loop, which is not thread-safe (a suspect in the same stall).
  Here a seek runs on the consumer's thread.
- A record that reaches a stream while the rebalance holds the flow is skipped unread,
  yet acknowledged: its offset can be committed and, once the worker dies, it is never
  read. Here only a record a stream took in (tracked) counts as processed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from faust.transport.drivers import aiokafka
from faust.types import TP, Message

log = logging.getLogger(__name__)
RESEEK_SECONDS = 2.0  # a partition read past what was handed on is sought back at most this often


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.next_offsets: dict[TP, int] = {}
        self.jumped_to: dict[TP, int] = {}
        self.resought_at: dict[TP, float] = {}

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
        thread = self._thread

        async def seek() -> None:
            thread.seek(partition, offset)

        # Faust seeks from the main thread; aiokafka's seek then resolves futures of the
        # consumer thread's loop, which may never wake for it: that partition stalls.
        await thread.call_thread(seek)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 (Faust's signature)
        sought: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp in sought:
                continue
            expected = self.next_offsets.get(tp)
            if (
                expected is not None
                and message.offset > expected
                and self._stale(tp, message.offset)
            ):
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
        if self.flow_active:
            await self._read_again_what_was_not_handed_on(sought)

    async def _read_again_what_was_not_handed_on(self, sought: set[TP]) -> None:
        thread, handed_on = self._thread, self.next_offsets

        async def positions() -> dict[TP, int]:
            state = thread._ensure_consumer()._subscription.subscription.assignment
            return {tp: state.state_value(tp).position for tp in state.tps
                    if tp in handed_on and state.state_value(tp).has_valid_position}  # fmt: skip

        for tp, position in (await thread.call_thread(positions)).items():
            expected = handed_on[tp]
            now = time.monotonic()
            if tp in sought or position <= expected or now < self.resought_at.get(tp, 0.0):
                continue
            if not self.app.topics.acks_enabled_for(tp.topic):
                continue
            self.resought_at[tp] = now + RESEEK_SECONDS
            log.warning(
                "records fetched but not handed on: reading them again",
                extra={"topic": tp.topic, "partition": tp.partition,
                       "position": expected, "fetched_to": position},
            )  # fmt: skip
            await self.seek(tp, expected)

    def _stale(self, tp: TP, offset: int) -> bool:
        acked: bool = self.app.topics.acks_enabled_for(tp.topic)
        return acked and self.jumped_to.get(tp) != offset
