"""The worker's Kafka consumer: Faust's, without the ways it loses records in a rebalance.

After a rebalance Faust seeks each partition to its committed offset while its fetcher
keeps running, and five things go wrong (faust-streaming issues 216, 221, 606; seen here
under repeated worker kills):

- A partition with no committed offset yet is not sought at all (aiokafka's
  `seek_to_committed` skips it), so records fetched before the rebalance and cleared
  from Faust's queues are never read again. Here it is sought to its earliest offset,
  and that offset, not the fetch position (which the running fetcher may already have
  moved past unprocessed records), becomes the read position.
- Faust resumes its stream partitions before that seek and empties the streams' queues
  once it is done, so records fetched in between are dropped after aiokafka moved past
  them; the partition then seemed stuck. Here a stream's record that arrives while a
  rebalance is under way, or from an earlier generation (which the stream would skip), is
  held back, and its partition is read again from its read position once the
  rebalance is over.
- A record fetched before the seek can still arrive after it. Faust takes the jump from
  the read position to that record for a gap in the topic (real only on compacted or
  transactional topics), counts the records in between as processed, commits past them
  and drops them when they are fetched again. Here that record is dropped instead and
  the partition sought back, so the records in between are read. A real gap shows up
  again at the same offset and is let through.
- A record that reaches a stream while the rebalance holds the flow is skipped unread,
  yet acknowledged: its offset can be committed and, once the worker dies, it is never
  read. Here only a record a stream took in (tracked) counts as processed.
- Faust seeks from the main thread, though aiokafka's consumer lives on Faust's consumer
  thread and its event loop. Here a seek runs on that thread.

It is also faster. Faust hands each record to its stream in a race against the flow
being suspended, with four new tasks per record. Almost every hand-off finishes without
waiting, so it is run eagerly here, and only one that has to wait joins the race.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from typing import Any, ClassVar, Final, cast

from faust.transport.drivers import aiokafka
from faust.types import TP, Message
from faust.types.transports import ConsumerT
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

log = logging.getLogger(__name__)

SCHEME: Final = "nxcloud-kafka"  # the broker URL scheme of `Transport`


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.next_offsets: dict[TP, int] = {}
        self.jumped_to: dict[TP, int] = {}
        self.read_again: set[TP] = set()

    def ack(self, message: Message) -> bool:
        """Only a record a stream took in (tracked) counts as processed: Faust acknowledges
        one skipped while a rebalance holds the flow and commits past it (robinhood/faust#115).
        A record read twice leaves the unacked set, where Faust keeps it (seen here)."""
        if not message.tracked:
            message.acked = True
            return False
        acked: bool = super().ack(message)
        # Faust keeps a record read twice (below the committed offset) as unacked.
        self._unacked_messages.discard(message)
        return acked

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Also seeks a partition with no committed offset, which aiokafka skips, to its
        earliest offset, and makes each offset the read position (faust-streaming#216)."""
        committed: dict[TP, int | None] = dict(await super().seek_to_committed())
        unread = [tp for tp, offset in committed.items() if not offset]
        if unread:
            earliest = await self.earliest_offsets(*unread)
            await self._thread.seek_wait({tp: earliest[tp] for tp in unread})
            committed.update({tp: earliest[tp] for tp in unread})
        self.next_offsets.update(
            {tp: offset for tp, offset in committed.items() if offset is not None}
        )
        return cast(Mapping[TP, int], committed)  # Faust's annotation; None is allowed

    async def _seek(self, partition: TP, offset: int) -> None:
        """On the consumer thread, where aiokafka's consumer and its loop live; Faust seeks
        from the main thread (seen here; no upstream issue)."""
        self.next_offsets[partition] = offset
        thread = self._thread

        async def seek() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 (Faust's signature)
        """Holds back a stream's record that arrives during a rebalance or from an earlier
        generation and reads its partition again afterwards (faust-streaming#216, #221; the
        fix upstream, #223, skips such a record for good). Drops a record ahead of the read
        position and seeks back, unless it comes again at that offset: a real gap
        (faust-streaming#312, #606)."""
        await self._read_again()
        sought: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp in sought:
                continue
            if self._held_back(tp, message):
                self.read_again.add(tp)
                self.jumped_to.pop(tp, None)
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

    async def wait_first(self, *coros: WaitArgT, timeout: Seconds = None) -> WaitResults:  # type: ignore[assignment]  # noqa: ASYNC109 (mode's signature)
        """Hands a record to its stream at once when that needs no wait; only a hand-off
        that has to wait races the flow's suspension (speed, not a fix)."""
        first, *others = coros
        if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        try:
            step = first.send(None)
        except StopIteration as finished:
            _close(others)
            return WaitResults([first], [finished.value], False)
        except BaseException:
            _close(others)
            raise
        return await super().wait_first(finish(first, step), *others, timeout=timeout)

    def _held_back(self, tp: TP, message: Message) -> bool:
        app = self.app
        return app.rebalancing or message.generation_id != app.consumer_generation_id

    async def _read_again(self) -> None:
        if self.app.rebalancing or not self.read_again:
            return
        assigned = self.assignment()
        for tp in self.read_again:
            offset = self.next_offsets.get(tp)
            if tp in assigned and offset is not None:
                await self.seek(tp, offset)
        self.read_again.clear()

    def _stale(self, tp: TP, message: Message) -> bool:
        acked: bool = self.app.topics.acks_enabled_for(message.topic)
        return acked and self.jumped_to.get(tp) != message.offset


def _close(waits: list[WaitArgT]) -> None:
    for wait in waits:
        if asyncio.iscoroutine(wait):
            wait.close()


async def finish(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    """Run to its end a coroutine that was stepped once and yielded `step`."""
    return await _resumed(coro, step)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, Any], step: Any) -> Generator[Any, Any, Any]:
    while True:
        try:
            sent = yield step
        except BaseException as exc:
            try:
                step = coro.throw(exc)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                step = coro.send(sent)
            except StopIteration as finished:
                return finished.value


class Transport(aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above. Faust picks a transport by the
    broker URL's scheme; pyproject.toml registers this one as `nxcloud-kafka` in Faust's
    `faust.transports` entry points, so no app is patched."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer
