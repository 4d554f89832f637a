"""The eager hand-off: a coroutine stepped once must then run exactly as a task would."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from connector.settings import Settings
from connector.worker.agents import create_app
from connector.worker.consumer import Consumer, finish


async def test_a_coroutine_stepped_once_finishes_with_its_value() -> None:
    gate = asyncio.Event()

    async def hand_off() -> int:
        await gate.wait()
        await asyncio.sleep(0)
        return 7

    coro = hand_off()
    step = coro.send(None)
    task = asyncio.ensure_future(finish(coro, step))
    gate.set()
    assert await asyncio.wait_for(task, 5) == 7


async def test_a_coroutine_stepped_once_is_cancelled_where_it_waits() -> None:
    gate, seen = asyncio.Event(), []

    async def hand_off() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro = hand_off()
    task = asyncio.ensure_future(finish(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_an_error_after_the_first_step_reaches_the_waiter() -> None:
    async def hand_off() -> None:
        await asyncio.sleep(0)
        raise LookupError("no channel")

    coro = hand_off()
    with pytest.raises(LookupError, match="no channel"):
        await finish(coro, coro.send(None))


# The rebalance fixes of connector/worker/consumer.py, one at a time, on a real consumer of a real
# (unstarted) worker app. Only the consumer thread, the part that talks to Kafka, is a
# recorder: what the fixes decide is what they ask of that thread. The kill and churn
# tests in tests/test_worker.py check the same against a broker, end to end.

TOPIC = "nxcloud.voice.dr.raw"
FRESH, COMMITTED = TP(TOPIC, 0), TP(TOPIC, 1)


class ConsumerThread:
    """Records what the consumer asks of its thread; answers as a broker would."""

    def __init__(self, committed: dict[TP, int | None], earliest: dict[TP, int]) -> None:
        self.committed, self.earliest = committed, earliest
        self.sought: list[tuple[TP, int]] = []
        self.sought_and_waited: list[dict[TP, int]] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in partitions}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.sought_and_waited.append(dict(offsets))

    def seek(self, partition: TP, offset: int) -> None:
        self.sought.append((partition, offset))

    async def call_thread(self, fun: Callable[[], Awaitable[None]]) -> None:
        await fun()

    def assignment(self) -> set[TP]:
        return {FRESH, COMMITTED}


def record(tp: TP, offset: int, generation: int = 1) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp,
                   generation_id=generation)  # fmt: skip


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> Consumer:
    app = create_app(Settings())
    monkeypatch.setattr(app.topics, "acks_enabled_for", lambda _topic: True)
    monkeypatch.setattr(app, "consumer_generation_id", 1)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    thread = ConsumerThread({FRESH: None, COMMITTED: 40}, {FRESH: 3, COMMITTED: 0})
    consumer._thread = cast(Any, thread)  # in place of the thread that talks to Kafka
    return consumer


def fetched(monkeypatch: pytest.MonkeyPatch, *records: Message) -> None:
    """What Faust's own getmany hands ours on its next call."""

    async def getmany(_self: Consumer, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        for message in records:
            yield message.tp, message

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", getmany)


async def taken(consumer: Consumer) -> list[int]:
    return [message.offset async for _tp, message in consumer.getmany(timeout=0.0)]


async def test_a_fresh_partition_reads_from_its_earliest_offset(consumer: Consumer) -> None:
    positions = await consumer.seek_to_committed()
    thread = cast(ConsumerThread, consumer._thread)
    assert thread.sought_and_waited == [{FRESH: 3}]  # sought explicitly, not left to fetch
    assert positions == {FRESH: 3, COMMITTED: 40}
    assert consumer.next_offsets == {FRESH: 3, COMMITTED: 40}  # not the fetch position


async def test_a_record_of_a_rebalance_is_held_back_and_its_partition_read_again(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await consumer.seek_to_committed()
    thread = cast(ConsumerThread, consumer._thread)
    monkeypatch.setattr(consumer.app, "rebalancing", True)
    fetched(monkeypatch, record(COMMITTED, 40))
    assert await taken(consumer) == []
    assert consumer.read_again == {COMMITTED}
    assert thread.sought == []  # not during the rebalance

    monkeypatch.setattr(consumer.app, "rebalancing", False)
    fetched(monkeypatch, record(COMMITTED, 40))
    assert await taken(consumer) == [40]
    assert thread.sought == [(COMMITTED, 40)]  # read again from its read position
    assert consumer.read_again == set()


async def test_a_record_of_an_earlier_generation_is_held_back(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await consumer.seek_to_committed()
    fetched(monkeypatch, record(COMMITTED, 40, generation=0), record(FRESH, 3))
    assert await taken(consumer) == [3]
    assert consumer.read_again == {COMMITTED}


async def test_a_stale_record_ahead_of_the_position_is_dropped_and_the_partition_sought_back(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await consumer.seek_to_committed()
    thread = cast(ConsumerThread, consumer._thread)
    fetched(monkeypatch, record(COMMITTED, 45), record(COMMITTED, 46))
    assert await taken(consumer) == []  # neither 45 nor what follows it on that fetch
    assert thread.sought == [(COMMITTED, 40)]
    fetched(monkeypatch, *(record(COMMITTED, offset) for offset in range(40, 47)))
    assert await taken(consumer) == [40, 41, 42, 43, 44, 45, 46]


async def test_a_real_gap_is_let_through_when_it_shows_again(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await consumer.seek_to_committed()
    fetched(monkeypatch, record(COMMITTED, 45))
    assert await taken(consumer) == []
    fetched(monkeypatch, record(COMMITTED, 45), record(COMMITTED, 46))  # the gap is real
    assert await taken(consumer) == [45, 46]
    assert consumer.next_offsets[COMMITTED] == 47


def test_a_record_a_stream_did_not_take_in_is_not_counted_as_processed(
    consumer: Consumer,
) -> None:
    message = record(COMMITTED, 41)
    message.tracked = False  # skipped while the rebalance held the flow
    assert consumer.ack(message) is False
    assert message.acked
    assert 41 not in consumer._acked_index[COMMITTED]


def test_a_record_read_twice_leaves_the_unacked_set(consumer: Consumer) -> None:
    consumer._committed_offset[COMMITTED] = 50
    message = record(COMMITTED, 41)  # below the committed offset: read a second time
    consumer._unacked_messages.add(message)
    consumer.ack(message)
    assert message not in consumer._unacked_messages
