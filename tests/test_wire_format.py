"""The registry wire format, opt-in: a worker with NXCLOUD_REGISTRY_WIRE_FORMAT writes call
events and dead letters framed with their schema's id in a real Apicurio Registry, waits
(not ready, saying why) while the registry cannot give the id, and every reader of the
project reads the framed records; confluent-kafka's JSONDeserializer validates each one."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from datetime import date
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from connector import admin, clients, registry, replay, report, wire
from connector.reconciler.loop import Reconciler
from connector.reconciler.store import MemoryStore
from connector.settings import Settings
from connector.tail import tail
from connector.topics import TopicNames
from connector.worker import heartbeat
from examples.call_table import apply, open_table, rows
from tests.kafka_helpers import read_topic
from tests.worker_helpers import (
    await_ready,
    cdr_record,
    dr_record,
    expected_finals,
    start_worker,
    stop,
    topics_and_env,
    traffic,
)


def framed(record: ConsumerRecord[bytes, bytes]) -> tuple[bytes, dict[str, bytes]]:
    return record.value or b"", dict(record.headers)


async def end_offset(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(**clients.options(settings))
    async with admin.running(consumer):
        partitions = await admin.partitions_of(consumer, topic)
        return sum((await consumer.end_offsets(partitions)).values())


def await_file(path: Path, containing: str, deadline: float = 60.0) -> str:
    """The file's text once it says `containing` (the worker's not-ready marker also says,
    for a moment after its start, that its call store catches up from the changelog)."""
    give_up, text = time.monotonic() + deadline, None
    while time.monotonic() < give_up:
        text = path.read_text() if path.exists() else None
        if text is not None and containing in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{path} did not say {containing!r} within {deadline} s: {text!r}")


# The first test to use the registry fetches it (once per machine) and starts it.
@pytest.mark.timeout(600)
async def test_the_worker_writes_the_wire_format_and_every_reader_reads_it(
    settings: Settings, topic_names: TopicNames, schema_registry: str, tmp_path: Path
) -> None:
    calls = list(traffic(4))
    expected = expected_finals(calls)
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        wired = {**env, "NXCLOUD_REGISTRY_URL": schema_registry,
                 "NXCLOUD_REGISTRY_WIRE_FORMAT": "true"}  # fmt: skip
        data = tmp_path / "worker"
        worker = start_worker(wired, data)
        try:
            await asyncio.to_thread(await_ready, worker)
            for key, value in [cdr_record(c, True) for c in calls]:
                await producer.send(names.cdr_raw, value, key=key)
            await producer.send(names.dr_raw, b"not a raw record", key=b"k")
            await producer.flush()
            # The schemas are not registered yet: no id, so nothing is written, and the
            # readiness probe says why.
            await asyncio.to_thread(await_file, data / heartbeat.NOT_READY, "schema registry")
            assert heartbeat.main([str(data / heartbeat.FILE_NAME), "600", "--ready"]) == 1
            assert await end_offset(settings, names.call_events) == 0
            assert await end_offset(settings, names.dead_letter) == 0

            await registry.register_all(Settings(registry_url=schema_registry), names)
            for number, call in enumerate(calls):
                await producer.send(names.dr_raw, dr_record(call, number)[1],
                                    key=dr_record(call, number)[0])  # fmt: skip
            await producer.flush()
            records = await read_topic(
                settings, names.call_events,
                lambda got: sum(orjson.loads(wire.payload(v))["revision"] == 2
                                for v, _ in got) >= len(calls),
                deadline=120, pick=framed,
            )  # fmt: skip
            letters = await read_topic(settings, names.dead_letter, lambda got: len(got) >= 1,
                                       pick=framed)  # fmt: skip
            assert not (data / heartbeat.NOT_READY).exists()
        finally:
            await asyncio.to_thread(stop, worker, signal.SIGTERM)

    client = SchemaRegistryClient({"url": schema_registry})
    deserialize = JSONDeserializer(None, schema_registry_client=client)
    events = []
    for value, headers in records:
        schema_id, _ = wire.unframe(value)
        assert schema_id is not None, "a plain record where the wire format was asked for"
        context = SerializationContext(names.call_events, MessageField.VALUE, list(headers.items()))
        event = deserialize(value, context)
        assert event == orjson.loads(wire.payload(value))
        events.append(event)
    finals = {e["call_id"]: e for e in events if e["revision"] == 2}
    assert set(finals) == set(expected)
    assert all(e["billing"]["cost_final"] for e in finals.values())
    ((letter, _),) = letters
    context = SerializationContext(names.dead_letter, MessageField.VALUE)
    assert deserialize(letter, context)["topic"] == names.dr_raw
    # The deserializer validates: a framed value that breaks the schema is refused.
    broken = wire.frame(wire.unframe(records[0][0])[0] or 0, b'{"call_id": 1}')
    with pytest.raises(SerializationError):
        deserialize(broken, SerializationContext(names.call_events, MessageField.VALUE))

    # The project's own readers read the framed records.
    out = io.StringIO()
    printed = await tail(settings, names.call_events, from_beginning=True,
                         wanted=lambda _: True, out=out, limit=len(records))  # fmt: skip
    assert printed == len(records)
    db = open_table(tmp_path / "calls.sqlite")
    for value, headers in records:
        apply(db, headers, value)
    assert {call: row[1] for call, row in rows(db).items()} == {
        call: e["event_id"] for call, e in finals.items()
    }
    wired_settings = Settings(
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers, topic_partitions=3,
        registry_url=schema_registry, registry_wire_format=True,
    )  # fmt: skip
    quiet = replay.Progress(io.StringIO())
    redriven = await replay.redrive(wired_settings, None, quiet, names)
    assert (redriven.read, redriven.dead_letters) == (1, 1)
    into = f"{names.call_events}.rebuilt"
    await replay.rebuild(wired_settings, into=into, since=None, until=None, progress=quiet,
                         names=names)  # fmt: skip
    rebuilt = await read_topic(settings, into, lambda got: len(got) >= len(records),
                               pick=framed)  # fmt: skip
    context = SerializationContext(into, MessageField.VALUE)
    assert {deserialize(value, context)["call_id"] for value, _ in rebuilt} == set(expected)

    # The reconciler reads the framed call events and frames its records too.
    await Reconciler(wired_settings, names, MemoryStore()).run(asyncio.Event(), once=True)
    reconciled = await read_topic(settings, names.reconciliation, lambda got: len(got) >= 1,
                                  pick=framed)  # fmt: skip
    context = SerializationContext(names.reconciliation, MessageField.VALUE)
    figures = [deserialize(value, context) for value, _ in reconciled]
    assert sum(record["calls"] for record in figures) == len(expected)
    days = {date.fromisoformat(record["day"]) for record in figures}
    shown = await report.records(settings, names.reconciliation, days)
    assert sum(record["calls"] for record in shown) == len(expected)
