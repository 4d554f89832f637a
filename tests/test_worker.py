"""Two Faust workers over three partitions turn DRs and CDRs into call revisions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaProducer

from connector import admin, cdr, dr, normalize, sandbox
from connector.merge import CallState, merge
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic
from tests.test_cli import read_until
from tests.test_schemas import valid

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def start_worker(env: dict[str, str], data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "worker"],
        env={**env, "NXCLOUD_WORKER_DATA_DIR": str(data)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def await_ready(process: subprocess.Popen[str]) -> None:
    read_until(process, "[^Worker]: Ready", time.monotonic() + 120, anywhere=True)


def traffic(messages: int) -> Iterator[sandbox.Call]:
    world = sandbox.World(seed=21, origin=T0, rate=1.0)
    for message in range(messages):
        yield from world.calls(message)


def dr_record(call: sandbox.Call, number: int) -> bytes:
    arrival = dr.Arrival(f"{number:032x}", call.ended_at, "127.0.0.1", "t", "POST", "")
    return dr.raw_record(call.dr_fields(ZONE), arrival)


def cdr_record(call: sandbox.Call, settled: bool) -> bytes:
    service = 0 if call.service == "group_call" else 1
    window = cdr.Window(service, T0, T0 + timedelta(hours=1))
    fetched = call.ended_at + timedelta(minutes=30 if settled else 5)
    return cdr.raw_record(call.cdr_row(ZONE, settled), window, 1, fetched, "t")


async def test_workers_emit_exactly_the_expected_revisions_even_when_one_is_killed(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    names = TopicNames().with_suffix(suffix)
    async with admin.admin_client(settings.kafka_bootstrap_servers) as client:
        await admin.ensure(client, declare(settings, names))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_TOPIC_PARTITIONS": "3",
    }
    calls = list(traffic(40))
    expected: dict[str, dict[str, Any]] = {}
    for call in calls:
        state: CallState | None = None
        for seen, at in (
            (
                normalize.from_cdr(
                    call.cdr_row(ZONE, False), 0 if call.service == "group_call" else 1, ZONE
                ),
                call.ended_at + timedelta(minutes=5),
            ),
            (
                normalize.from_cdr(
                    call.cdr_row(ZONE, True), 0 if call.service == "group_call" else 1, ZONE
                ),
                call.ended_at + timedelta(minutes=30),
            ),
            (normalize.from_dr(call.dr_fields(ZONE), ZONE), call.ended_at),
        ):
            state, event = merge(state, seen, at)
            if event is not None:
                expected[event["call_id"]] = event
    first = start_worker(env, tmp_path / "a")
    second = start_worker(env, tmp_path / "b")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await asyncio.to_thread(await_ready, first)
        await asyncio.to_thread(await_ready, second)

        async def phase(
            topic: str, records: list[tuple[bytes, bytes]], revision: int, kill: bool = False
        ) -> list[Any]:
            for number, (key, value) in enumerate(records):
                await producer.send(topic, value, key=key)
                if kill and number == len(records) // 2:
                    await producer.flush()
                    first.send_signal(signal.SIGKILL)  # mid-stream, while it is processing
            await producer.flush()
            return await read_topic(
                settings.kafka_bootstrap_servers,
                names.call_events,
                lambda events: sum(e["revision"] == revision for e in events) >= len(expected),
                deadline=120,
            )

        def keyed(call: sandbox.Call) -> bytes:
            return f"{call.messageid}|{call.national}".encode()

        provisional = [(keyed(c), cdr_record(c, False)) for c in calls]
        await phase(names.cdr_raw, provisional + provisional[:10], 1)
        settled = [(keyed(c), cdr_record(c, True)) for c in calls]
        await phase(names.cdr_raw, settled, 2, kill=True)
        assert first.wait(10) == -signal.SIGKILL
        drs = [(keyed(c), dr_record(c, n)) for n, c in enumerate(calls)]
        events = await phase(names.dr_raw, drs + drs[:10], 3)
    finally:
        await producer.stop()
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()

    by_call: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for event in events:
        valid("call-event.v1.json", event)
        by_call[event["call_id"]][event["revision"]].add(event["event_id"])
    assert set(by_call) == set(expected)
    for call_id, revisions in by_call.items():
        assert sorted(revisions) == [1, 2, 3], call_id
        assert all(len(ids) == 1 for ids in revisions.values()), "a duplicate that is not exact"
    finals = {e["call_id"]: e for e in events if e["revision"] == 3}
    for call_id, event in expected.items():
        assert finals[call_id]["event_id"] == event["event_id"]
        assert finals[call_id]["billing"]["cost_final"] is True
    repeats = len(events) - 3 * len(expected)
    print(f"{len(expected)} calls, {len(events)} events, {repeats} exact repeats")
