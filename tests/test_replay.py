"""Replay, rebuild and redrive against a real broker and a running worker."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connector import admin, dr, envelope, identity, replay
from connector.clock import utcnow
from connector.local import sandbox
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic
from tests.support import ZONE
from tests.worker_helpers import (
    assert_each_event_names_its_schema,
    await_ready,
    start_worker,
    traffic,
    with_headers,
)

TOKYO = ZoneInfo("Asia/Tokyo")


def distinct(count: int) -> list[sandbox.Call]:
    """Calls of different messages, so a message id names one call."""
    found: dict[int, sandbox.Call] = {}
    for call in traffic(count * 2):
        found.setdefault(call.messageid, call)
    assert len(found) >= count
    return list(found.values())[:count]


def dr_value(fields: dict[str, str], number: int, at: datetime) -> bytes:
    arrival = dr.Arrival(f"{number:032x}", at, "127.0.0.1", "t", "POST", "")
    return dr.raw_record(fields, arrival)


class Pipeline:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings, self.producer = settings, producer
        self.names = TopicNames.of(settings)

    async def events(self, until: Any, deadline: float = 120) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await read_topic(
            self.settings.kafka_bootstrap_servers, self.names.call_events, until, deadline
        )
        return found


@pytest.fixture
async def pipeline(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    ours = replace(settings, topic_suffix=suffix)
    await admin.converge(ours, declare(ours))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": ours.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_TOPIC_PARTITIONS": "3",
    }
    worker = start_worker(env, tmp_path / "worker")
    producer = AIOKafkaProducer(
        bootstrap_servers=ours.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await_ready(worker)
        yield Pipeline(ours, producer)
    finally:
        await producer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def test_replay_with_a_corrected_zone_revises_exactly_the_affected_calls(
    pipeline: Pipeline,
) -> None:
    now = datetime.now(UTC)
    calls = distinct(30)
    names = pipeline.names
    for number, call in enumerate(calls):
        fields = call.dr_fields(ZONE)
        if number >= 20:
            fields |= {"start_time": "", "end_time": ""}
        stored_at = now - timedelta(hours=2) if number < 10 else now - timedelta(minutes=10)
        await pipeline.producer.send(
            names.dr_raw, dr_value(fields, number, stored_at), key=identity.dr_key(fields),
            timestamp_ms=int(stored_at.timestamp() * 1000),
        )  # fmt: skip
    await pipeline.producer.flush()
    first = await pipeline.events(lambda events: len(events) >= len(calls))
    assert sorted(e["revision"] for e in first) == [1] * len(calls)
    by_message = {e["message_id"]: e for e in first}

    tokyo = replace(pipeline.settings, nxcloud_timezone=TOKYO)
    since = now - timedelta(hours=1)
    summary = await replay.replay(tokyo, source="dr", since=since, until=None,
                                  progress=replay.Progress(io.StringIO()),
                                  now=utcnow())  # fmt: skip
    affected = {by_message[str(c.messageid)]["call_id"] for c in calls[10:20]}
    assert summary.read == 20
    assert summary.changed == affected
    after = await pipeline.events(lambda events: len(events) >= len(calls) + len(affected))
    assert len(after) == len(calls) + len(affected)
    revised = [event for event in after if event["revision"] == 2]
    assert {event["call_id"] for event in revised} == affected
    assert len(revised) == len(affected)
    for event in revised:
        before = next(e for e in first if e["call_id"] == event["call_id"])
        shift = datetime.fromisoformat(before["started_at"]) - datetime.fromisoformat(
            event["started_at"]
        )
        assert shift == timedelta(hours=1)

    again = await replay.replay(tokyo, source="dr", since=since, until=None,
                                progress=replay.Progress(io.StringIO()), now=utcnow())  # fmt: skip
    assert again.read == 20
    assert again.changed == set()
    final = await pipeline.events(lambda events: len(events) >= len(after), deadline=10)
    assert len(final) == len(after)

    rebuilt = names.call_events + ".rebuilt"
    fresh = await replay.rebuild(tokyo, into=rebuilt, since=None, until=None,
                                 progress=replay.Progress(io.StringIO()))  # fmt: skip
    assert len(fresh.changed) == len(calls)
    events = await read_topic(
        tokyo.kafka_bootstrap_servers, rebuilt, lambda events: len(events) >= len(calls)
    )
    assert sorted(e["revision"] for e in events) == [1] * len(calls)
    corrected = {e["call_id"]: e["started_at"] for e in after if e["revision"] == 2}
    for event in events:
        if event["call_id"] in corrected:
            assert event["started_at"] == corrected[event["call_id"]]
    enveloped = await read_topic(tokyo.kafka_bootstrap_servers, rebuilt,
                                 lambda got: len(got) >= len(calls), pick=with_headers)  # fmt: skip
    assert_each_event_names_its_schema(enveloped, envelope.source(tokyo))


async def test_redrive_sends_back_what_now_passes_and_leaves_the_rest(
    pipeline: Pipeline,
) -> None:
    names = pipeline.names
    now = datetime.now(UTC)
    good, bad, refused_by_worker = distinct(3)
    arrival = {"receipt_id": "a" * 32, "received_at": now.isoformat(), "receiver": "t",
               "remote_addr": "127.0.0.1", "method": "POST", "content_type": ""}  # fmt: skip
    letters = [
        {"source": "receiver", "reason": "an old rule", **arrival,
         "fields": good.dr_fields(ZONE), "body": None},
        {"source": "receiver", "reason": "not a DR", **arrival,
         "fields": {**bad.dr_fields(ZONE), "voice_type": "7"}, "body": None},
        {"source": "worker", "reason": "an old bug", "topic": names.dr_raw, "partition": 0,
         "offset": 0, "value": dr_value(refused_by_worker.dr_fields(ZONE), 9, now).decode()},
    ]  # fmt: skip
    for letter in letters:
        await pipeline.producer.send(names.dead_letter, orjson.dumps(letter))
    await pipeline.producer.flush()
    summary = await replay.redrive(pipeline.settings, None, replay.Progress(io.StringIO()))
    assert (summary.read, summary.observations, summary.dead_letters) == (3, 2, 1)
    wanted = {str(good.messageid), str(refused_by_worker.messageid)}
    events = await pipeline.events(lambda events: {e["message_id"] for e in events} >= wanted)
    assert str(bad.messageid) not in {e["message_id"] for e in events}
    stored = await read_topic(
        pipeline.settings.kafka_bootstrap_servers, names.dr_raw, lambda values: len(values) >= 1
    )
    assert [v["fields"]["messageid"] for v in stored] == [str(good.messageid)]
