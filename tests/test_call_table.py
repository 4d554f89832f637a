"""The example consumer keeps the latest revision of each call, and reading the topic again
(into the same table or a new one) gives the same table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connector import admin, envelope
from connector.settings import Settings
from connector.topics import TopicNames, declare
from examples.call_table import WrongSchema, apply, follow, open_table, rows
from tests.worker_helpers import stream


async def test_reading_the_topic_twice_gives_the_same_table(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    spec = next(s for s in declare(settings, topic_names) if s.name == topic_names.call_events)
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, [spec])
    events, latest = stream()
    source = envelope.source(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    async with producer:
        sent = [await producer.send(spec.name, orjson.dumps(event), key=event["call_id"].encode(),
                                    headers=envelope.headers(event, source))
                for event in events]  # fmt: skip
        for delivery in sent:
            await delivery

    bootstrap = settings.kafka_bootstrap_servers
    db = open_table(tmp_path / "calls.sqlite")
    first = await follow(bootstrap, db, spec.name, stop_at_end=True)
    table = rows(db)
    assert first.read == len(events)
    assert {call: (r, e) for call, (r, e, _) in table.items()} == {
        call: (event["revision"], event["event_id"]) for call, event in latest.items()
    }
    assert all(table[call][2] == event for call, event in latest.items())

    again = await follow(bootstrap, db, spec.name, from_beginning=True, stop_at_end=True)
    assert (again.read, again.changed) == (len(events), 0)
    assert rows(db) == table
    resumed = await follow(bootstrap, db, spec.name, stop_at_end=True)
    assert (resumed.read, resumed.changed) == (0, 0)

    fresh = open_table(tmp_path / "fresh.sqlite")
    await follow(bootstrap, fresh, spec.name, stop_at_end=True)
    assert rows(fresh) == table


def test_an_older_revision_and_a_repeat_change_nothing(tmp_path: Path) -> None:
    events, _ = stream()
    first, second = events[0], next(e for e in events[1:] if e["call_id"] == events[0]["call_id"])
    headers = dict(envelope.headers(first, "/test"))
    db = open_table(tmp_path / "calls.sqlite")
    assert apply(db, headers, orjson.dumps(second))
    assert not apply(db, headers, orjson.dumps(first))
    assert not apply(db, headers, orjson.dumps(second))
    assert rows(db)[second["call_id"]][1] == second["event_id"]


def test_an_event_of_another_schema_stops_the_consumer(tmp_path: Path) -> None:
    event = stream()[0][0]
    headers = {**dict(envelope.headers(event, "/test")),
               "ce_dataschema": b"urn:nxcloud-connector:schema:call-event:v2.0"}  # fmt: skip
    with pytest.raises(WrongSchema):
        apply(sqlite3.connect(tmp_path / "x.sqlite"), headers, orjson.dumps(event))
