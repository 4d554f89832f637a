"""The private faust-streaming and mode names that connector/worker/consumer.py builds on,
and the order of Faust's assignment the call store's catch-up relies on. faust-streaming and
mode-streaming are pinned exactly in pyproject.toml; an upgrade that renames or reshapes one
of these fails here, naming it, before the kill and churn tests fail in a way that is hard
to read. tests/test_consumer.py tests what each override does."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import faust
import faust.streams
import mode
import pytest
from faust.transport import consumer as base_consumer
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message

Check = Callable[[], bool]


def _sets(cls: type, attribute: str) -> Check:
    return lambda: f"self.{attribute} =" in inspect.getsource(cls)


def _parameters(function: Callable[..., object], *names: str) -> Check:
    return lambda: tuple(inspect.signature(function).parameters)[1:] == names


def _in_order(text: str, *parts: str) -> bool:
    at = [text.find(part) for part in parts]
    return -1 not in at and at == sorted(at)


RELIED_ON: dict[str, tuple[str, Check]] = {
    "Consumer._seek(partition, offset)": (
        "consumer.py: seeks on the consumer thread",
        _parameters(faust_aiokafka.Consumer._seek, "partition", "offset"),
    ),
    "Consumer.seek_to_committed": (
        "consumer.py: fresh partitions sought to their earliest offset",
        lambda: inspect.iscoroutinefunction(faust_aiokafka.Consumer.seek_to_committed),
    ),
    "Consumer.earliest_offsets": (
        "consumer.py: a fresh partition's read position",
        lambda: inspect.iscoroutinefunction(faust_aiokafka.Consumer.earliest_offsets),
    ),
    "Consumer.getmany(timeout)": (
        "consumer.py: held-back and stale records",
        _parameters(faust_aiokafka.Consumer.getmany, "timeout"),
    ),
    "Consumer.wait_first(*coros, timeout)": (
        "consumer.py: the eager hand-off",
        _parameters(faust_aiokafka.Consumer.wait_first, "coros", "timeout"),
    ),
    "Consumer._unacked_messages": (
        "consumer.py: a record read twice leaves the unacked set",
        _sets(base_consumer.Consumer, "_unacked_messages"),
    ),
    "ThreadDelegateConsumer._thread": (
        "consumer.py: seeks run on the consumer thread",
        _sets(base_consumer.ThreadDelegateConsumer, "_thread"),
    ),
    "AIOKafkaConsumerThread.seek_wait/seek/call_thread": (
        "consumer.py: seeks run on the consumer thread",
        lambda: all(
            callable(getattr(faust_aiokafka.AIOKafkaConsumerThread, name, None))
            for name in ("seek_wait", "seek", "call_thread")
        ),
    ),
    "mode.Service._stopped/_crashed": (
        "consumer.py: the eager hand-off steps aside once the service stops",
        lambda: all(
            f"self.{name} =" in inspect.getsource(mode.Service.__init__)
            for name in ("_stopped", "_crashed")
        ),
    ),
    "App.rebalancing/consumer_generation_id": (
        "consumer.py: records that arrive during a rebalance are held back",
        lambda: all(hasattr(faust.App, name) for name in ("rebalancing", "consumer_generation_id")),
    ),
    "Message.tracked/generation_id/acked": (
        "consumer.py: only tracked records count as processed",
        lambda: {"tracked", "generation_id", "acked"} <= set(Message.__slots__),
    ),
    "Conductor.acks_enabled_for": (
        "consumer.py: gaps only matter where acks are on",
        lambda: callable(getattr(Conductor, "acks_enabled_for", None)),
    ),
    "App.on_partitions_assigned, sent with the assignment once Faust's part is done": (
        "agents.py and restore.py: each assigned partition is caught up from the changelog",
        lambda: _in_order(
            inspect.getsource(faust.App._on_partitions_assigned),
            "self.tables.on_rebalance",
            "self.on_partitions_assigned.send)(assigned)",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(RELIED_ON))
def test_a_private_name_the_worker_relies_on_is_still_there(name: str) -> None:
    why, present = RELIED_ON[name]
    assert present(), (
        f"faust-streaming {faust.__version__} / mode-streaming: {name} is missing or changed; "
        f"{why}. Re-check that override against the new version, then loop the kill and "
        "churn tests (tests/test_worker.py) before moving the pin in pyproject.toml."
    )


def test_the_versions_the_overrides_were_checked_against_are_installed() -> None:
    from importlib.metadata import version

    assert version("faust-streaming") == "0.15.3"
    assert version("mode-streaming") == "0.7.1"
