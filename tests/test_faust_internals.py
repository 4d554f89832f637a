"""The private faust-streaming and mode names that connector/worker/consumer.py, table.py
and recovery.py build on. faust-streaming and mode-streaming are pinned exactly in
pyproject.toml; an upgrade that renames or reshapes one of these fails here, naming it,
before the kill and churn tests fail in a way that is hard to read."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable

import faust
import faust.streams
import mode
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport import consumer as base_consumer
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message
from mode.services import ServiceTask

Check = Callable[[], bool]


def _sets(cls: type, attribute: str) -> Check:
    return lambda: f"self.{attribute} =" in inspect.getsource(cls)


def _parameters(function: Callable[..., object], *names: str) -> Check:
    return lambda: tuple(inspect.signature(function).parameters)[1:] == names


def _inits(cls: type, *names: str) -> Check:
    return lambda: all(f"self.{name}" in inspect.getsource(cls.__init__) for name in names)  # type: ignore[misc]


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
    "Consumer._is_changelog_tp": (
        "consumer.py: changelog records are never held back",
        lambda: callable(getattr(faust_aiokafka.Consumer, "_is_changelog_tp", None)),
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
    "faust.streams._current_event": (
        "table.py: changes filed under the partition of a batch's record",
        lambda: isinstance(getattr(faust.streams, "_current_event", None), contextvars.ContextVar),
    ),
    "memory Store.data/_key_partition": (
        "table.py: the memory store starts each assignment afresh",
        lambda: "_key_partition" in inspect.getsource(MemoryStore),
    ),
    "Recovery.active_offsets/standby_offsets": (
        "table.py: the memory store re-reads its whole changelog",
        _inits(Recovery, "active_offsets", "standby_offsets"),
    ),
    "Recovery._seek_offsets(consumer, tps, offsets, title), before need_recovery": (
        "recovery.py: the active partitions read straight are sought to their end",
        lambda: (
            _parameters(Recovery._seek_offsets, "consumer", "tps", "offsets", "title")()
            and _in_order(
                inspect.getsource(Recovery),
                "async def _restart_recovery",
                "T(self._seek_offsets)",
                "if self.need_recovery():",
            )
        ),
    ),
    "Recovery.active_highwaters/tp_to_table": (
        "recovery.py: where the straight read ends, which table a partition fills",
        _inits(Recovery, "active_highwaters", "tp_to_table"),
    ),
    "stores' apply_changelog_batch reads event.key/value, message.tp/offset/partition": (
        "changelog.py: a Change is both the event and its message",
        lambda: all(
            name in inspect.getsource(MemoryStore) + inspect.getsource(RocksDBStore)
            for name in (
                "event.message.tp",
                "event.message.offset",
                "msg.partition",
                "msg.key",
                "msg.value",
                "event.key",
                "event.value",
            )
        ),
    ),
    "Recovery._slurp_changelogs, a service task of that name": (
        "recovery.py: the chunked filing replaces Faust's task; renamed, both would run",
        lambda: isinstance(Recovery.__dict__.get("_slurp_changelogs"), ServiceTask),
    ),
    "Recovery's bookkeeping: buffers, buffer_sizes, tps, received-at stamps": (
        "recovery.py: the chunked filing keeps Faust's own books",
        _inits(
            Recovery,
            "buffers",
            "buffer_sizes",
            "active_tps",
            "standby_tps",
            "_active_events_received_at",
            "_standby_events_received_at",
        ),
    ),
    "Recovery's flush stamps, in_recovery and its end": (
        "recovery.py: the chunked filing flushes and ends recovery as Faust does",
        lambda: (
            all(
                f"self.{name} =" in inspect.getsource(Recovery)
                for name in ("_last_flush_at", "_last_active_event_processed_at", "in_recovery")
            )
            and all(
                callable(getattr(Recovery, name, None))
                for name in ("need_recovery", "standby_remaining_total", "_set_recovery_ended")
            )
            and isinstance(getattr(Recovery, "signal_recovery_end", None), property)
        ),
    ),
    "TableManager.changelog_queue/standbys_ready/on_standbys_ready": (
        "recovery.py and consumer.py: changelog records are queued and filed in chunks",
        lambda: (
            isinstance(getattr(TableManager, "changelog_queue", None), property)
            and "self.standbys_ready =" in inspect.getsource(TableManager)
            and callable(getattr(TableManager, "on_standbys_ready", None))
        ),
    ),
    "RocksDB Store._db_for_partition/offset_key/use_rocksdict": (
        "changelog.py: a restore's write batches carry the offset as Faust keeps it",
        lambda: (
            _parameters(RocksDBStore._db_for_partition, "partition")()
            and RocksDBStore.offset_key == b"__faust\0offset__"
            and "self.use_rocksdict" in inspect.getsource(RocksDBStore.__init__)
            and "self.offset_key, str(offset).encode()" in inspect.getsource(RocksDBStore)
        ),
    ),
    "Table.on_rebalance(assigned, revoked, newly_assigned, generation_id)": (
        "table.py: the memory store starts each assignment afresh",
        _parameters(
            faust.Table.on_rebalance, "assigned", "revoked", "newly_assigned", "generation_id"
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
