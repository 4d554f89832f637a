import logging

import pytest
from aiokafka import errors

from connector import dr
from connector.delivery import Outcome, classify
from connector.outage import Outage, Throttle


@pytest.mark.parametrize(
    "exc",
    [
        errors.MessageSizeTooLargeError(),
        errors.RecordTooLargeError(),
        errors.RecordListTooLargeError(),
        errors.CorruptRecordException(),
        errors.InvalidTopicError(),
        TypeError("value must be bytes"),
    ],
)
def test_what_kafka_refuses_for_good(exc: BaseException) -> None:
    assert classify(exc) is Outcome.REFUSED


@pytest.mark.parametrize(
    "exc",
    [
        errors.KafkaTimeoutError(),
        errors.KafkaConnectionError(),
        errors.NotLeaderForPartitionError(),
        errors.NotEnoughReplicasError(),
        errors.NotEnoughReplicasAfterAppendError(),
        errors.RequestTimedOutError(),
        errors.LeaderNotAvailableError(),
        errors.UnknownTopicOrPartitionError(),
        errors.NoBrokersAvailable(),
        errors.KafkaError(),
        TimeoutError(),
        OSError("connection refused"),
    ],
)
def test_what_means_kafka_is_down(exc: BaseException) -> None:
    assert classify(exc) is Outcome.UNAVAILABLE


def test_header_values_in_a_record_are_cut_visibly() -> None:
    assert dr.cut("x" * 300) == "x" * 256 + "...[cut 44 chars]"
    assert dr.cut("text/plain") == "text/plain"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_at_start_every_so_often_and_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(logging.getLogger("test.outage"), clock, every=30)
    with caplog.at_level(logging.INFO, "test.outage"):
        for _ in range(100 * 90):  # 100 failures a second for 90 s
            outage.failed(errors.KafkaConnectionError(), depth=5)
            clock.now += 0.01
        outage.ended(depth=0)
    assert [r.getMessage() for r in caplog.records] == [
        "kafka unavailable, spooling",
        "kafka still unavailable",
        "kafka still unavailable",
        "kafka available again",
    ]
    assert caplog.records[-1].errors == {"KafkaConnectionError": 9000}  # type: ignore[attr-defined]


def test_aiokafka_lines_are_throttled_per_message() -> None:
    clock = Clock()
    throttle = Throttle("aiokafka", every=60, clock=clock)

    def passes(name: str, msg: str) -> bool:
        record = logging.makeLogRecord({"name": name, "msg": msg, "levelno": logging.ERROR})
        return throttle.filter(record)

    allowed = 0
    for _ in range(30 * 120):  # 30 lines a second for two minutes
        allowed += passes("aiokafka.conn", "Unable connect to %s")
        clock.now += 1 / 30
    assert allowed == 2
    assert passes("aiokafka.producer", "other message")
    assert passes("connector.receiver.publisher", "Unable connect to %s")


def test_the_receiver_errors_are_throttled_but_not_its_info_lines() -> None:
    clock = Clock()
    throttle = Throttle("connector.receiver.app", every=10, clock=clock, level=logging.ERROR)

    def passes(level: int) -> bool:
        record = logging.makeLogRecord(
            {"name": "connector.receiver.app", "msg": "record not stored", "levelno": level}
        )
        return throttle.filter(record)

    assert [passes(logging.ERROR) for _ in range(100)].count(True) == 1
    assert all(passes(logging.INFO) for _ in range(100))
