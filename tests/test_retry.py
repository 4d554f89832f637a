"""Which Kafka failures of a batch the worker waits out (it tries the batch again from its
store) and which end it (it exits, so nothing of the batch is committed)."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)

from connector.settings import Settings
from connector.worker.agents import passing


@pytest.mark.parametrize(
    ("error", "waited_out"),
    [
        (KafkaConnectionError(), True),
        (NotLeaderForPartitionError(), True),
        (RequestTimedOutError(), True),
        (KafkaTimeoutError(), True),
        (MessageSizeTooLargeError(), False),
        (TopicAuthorizationFailedError(), False),
    ],
)
def test_a_failure_time_may_end_is_waited_out_and_a_final_one_is_not(
    error: KafkaError, waited_out: bool
) -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert passing(error, settings) is waited_out
