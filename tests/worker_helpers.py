"""Running workers as processes, and the records and topics they work on."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from jsonschema import Draft202012Validator

from connector import admin, cdr, dr, identity, normalize, schema
from connector.local import sandbox
from connector.local.broker import free_port
from connector.merge import merge
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic
from tests.support import ZONE

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LOGS: dict[int, Path] = {}


def start_worker(
    env: dict[str, str],
    data: Path,
    *,
    log: Path | None = None,
    default_data_dir: bool = False,
    module: str = "connector",
) -> subprocess.Popen[str]:
    """A worker whose output goes to `log` (default `<data>.log`; a pipe nobody reads would
    stall it), its state in `data` (or, with `default_data_dir`, where the settings put it);
    `module` runs it (`python -m module worker`)."""
    log = log or data.with_suffix(".log")
    state = {} if default_data_dir else {"NXCLOUD_WORKER_DATA_DIR": str(data)}
    with log.open("a") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "worker"],
            env={"NXCLOUD_WORKER_METRICS_PORT": str(free_port()), **env, **state},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    LOGS[process.pid] = log
    return process


def scrape(port: int) -> dict[str, float]:
    """A worker's metrics, by name and labels as served."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return {n: float(v) for n, v in (line.rsplit(" ", 1) for line in lines if line[:1] != "#")}


def await_ready(process: subprocess.Popen[str]) -> None:
    log, deadline = LOGS[process.pid], time.monotonic() + 120
    while time.monotonic() < deadline:
        if "[^Worker]: Ready" in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the worker is not ready: {log.read_text(errors='replace')[-3000:]}")


def traffic(messages: int) -> Iterator[sandbox.Call]:
    world = sandbox.World(seed=21, origin=T0, rate=1.0)
    for message in range(messages):
        yield from world.calls(message)


def dr_record(
    call: sandbox.Call, number: int, received_at: datetime | None = None
) -> tuple[bytes, bytes]:
    """The key and value the receiver would store for the call's DR."""
    fields = call.dr_fields(ZONE)
    received_at = received_at or call.ended_at
    arrival = dr.Arrival(f"{number:032x}", received_at, "127.0.0.1", "t", "POST", "")
    return identity.dr_key(fields), dr.raw_record(fields, arrival)


def cdr_record(call: sandbox.Call, settled: bool) -> tuple[bytes, bytes]:
    """The key and value the poller would store for the call's CDR row."""
    service = 0 if call.service == "group_call" else 1
    window = cdr.Window(service, T0, T0 + timedelta(hours=1))
    fetched = call.ended_at + timedelta(minutes=30 if settled else 5)
    row = call.cdr_row(ZONE, settled)
    return identity.cdr_key(row), cdr.raw_record(row, window, 1, fetched, "t")


def stop(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Signal the worker and wait for it; one that ignores SIGTERM for a minute is killed,
    as Kubernetes would."""
    process.send_signal(sig)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@asynccontextmanager
async def topics_and_env(
    settings: Settings, topic_names: TopicNames
) -> AsyncIterator[tuple[TopicNames, dict[str, str], AIOKafkaProducer]]:
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    names = TopicNames().with_suffix(suffix)
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, names))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_TOPIC_PARTITIONS": "3",
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    async with producer:
        yield names, env, producer


async def revisions_on(
    bootstrap: str, names: TopicNames, revision: int, calls: int, deadline: float = 120
) -> list[Any]:
    """The call events, once `calls` events of `revision` are there."""
    return await read_topic(
        bootstrap,
        names.call_events,
        lambda events: sum(e["revision"] == revision for e in events) >= calls,
        deadline=deadline,
    )


def with_headers(record: ConsumerRecord[bytes, bytes]) -> tuple[dict[str, bytes], Any]:
    return dict(record.headers), orjson.loads(record.value or b"null")


def assert_each_event_names_its_schema(
    records: list[tuple[dict[str, bytes], Any]], source: str
) -> None:
    """The CloudEvents headers of every event: its own id, this deployment's source, and
    a `ce_dataschema` that resolves to a shipped schema the event is valid against."""
    for headers, event in records:
        assert headers["ce_id"].decode() == event["event_id"]
        assert headers["ce_source"].decode() == source
        assert headers["ce_subject"].decode() == event["call_id"]
        document = schema.resolve(headers["ce_dataschema"].decode())
        errors = [error.message for error in Draft202012Validator(document).iter_errors(event)]
        assert not errors, errors


def stream() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Events of 30 calls in the order a topic could hold them (calls interleaved, each in
    order), with exact repeats and one call forgotten and started again at revision 1;
    and each call's latest event."""
    world, rng = sandbox.World(seed=7, origin=T0, rate=1.0), random.Random(3)
    calls = [call for message in range(12) for call in world.calls(message)][:30]
    per_call = [call.events(ZONE) for call in calls]
    forgotten = calls[0]
    dr = normalize.from_dr(forgotten.dr_fields(ZONE), ZONE)
    restarted = merge(None, dr, forgotten.ended_at + timedelta(days=9))[1]
    assert restarted is not None
    per_call[0].append(restarted)
    for events in per_call[::4]:
        events.insert(len(events) - 1, events[0])  # a worker crashed: an exact repeat
    queues = [list(events) for events in per_call]
    ordered: list[dict[str, Any]] = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        ordered.append(queue.pop(0))
    latest = {events[-1]["call_id"]: events[-1] for events in per_call}
    assert latest[restarted["call_id"]]["revision"] == 1
    return ordered, latest


def expected_finals(calls: list[sandbox.Call]) -> dict[str, dict[str, Any]]:
    """Each call's last event when its provisional CDR, settled CDR and DR arrive in turn."""
    return {event["call_id"]: event for call in calls for event in call.events(ZONE)}
