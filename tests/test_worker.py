"""Faust workers over three partitions turn DRs and CDRs into call revisions, and lose
nothing when they are killed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from jsonschema import Draft202012Validator

from connector import admin, cdr, dr, normalize, schema
from connector.local import sandbox
from connector.local.broker import free_port
from connector.records import group_id
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, tombstone_key
from tests.test_normalize import CDR_GROUP_ROW
from tests.test_phone import unallocated
from tests.test_receiver import EXAMPLE_FIELDS
from tests.test_schemas import valid

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LOGS: dict[int, Path] = {}


def start_worker(env: dict[str, str], data: Path) -> subprocess.Popen[str]:
    """A worker whose output goes to `<data>.log` (a pipe nobody reads would stall it)."""
    with data.with_suffix(".log").open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "worker"],
            env={
                "NXCLOUD_WORKER_METRICS_PORT": str(free_port()),
                **env,
                "NXCLOUD_WORKER_DATA_DIR": str(data),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    LOGS[process.pid] = data.with_suffix(".log")
    return process


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
    return dr.key(fields), dr.raw_record(fields, arrival)


def cdr_record(call: sandbox.Call, settled: bool) -> tuple[bytes, bytes]:
    """The key and value the poller would store for the call's CDR row."""
    service = 0 if call.service == "group_call" else 1
    window = cdr.Window(service, T0, T0 + timedelta(hours=1))
    fetched = call.ended_at + timedelta(minutes=30 if settled else 5)
    row = call.cdr_row(ZONE, settled)
    return cdr.key(row), cdr.raw_record(row, window, 1, fetched, "t")


def expected_finals(calls: list[sandbox.Call]) -> dict[str, dict[str, Any]]:
    """Each call's last event when its provisional CDR, settled CDR and DR arrive in turn."""
    return {event["call_id"]: event for call in calls for event in call.events(ZONE)}


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


def assert_exact(events: list[Any], expected: dict[str, dict[str, Any]]) -> int:
    """Every call has revisions 1, 2 and 3 and ends as expected; duplicates are only exact
    repeats. Returns the number of repeats."""
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
    return len(events) - 3 * len(expected)


async def test_workers_emit_exactly_the_expected_revisions_even_when_one_is_killed(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    calls = list(traffic(40))
    expected = expected_finals(calls)
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        first = start_worker(env, tmp_path / "a")
        second = start_worker(env, tmp_path / "b")
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
                return await revisions_on(bootstrap, names, revision, len(expected))

            provisional = [cdr_record(c, False) for c in calls]
            await phase(names.cdr_raw, provisional + provisional[:10], 1)
            settled = [cdr_record(c, True) for c in calls]
            await phase(names.cdr_raw, settled, 2, kill=True)
            assert first.wait(10) == -signal.SIGKILL
            drs = [dr_record(c, n) for n, c in enumerate(calls)]
            events = await phase(names.dr_raw, drs + drs[:10], 3)
        finally:
            for process in (first, second):
                if process.poll() is None:
                    await asyncio.to_thread(stop, process, signal.SIGTERM)
    repeats = assert_exact(events, expected)
    print(f"{len(expected)} calls, {len(events)} events, {repeats} exact repeats")


async def test_workers_lose_nothing_while_killed_and_restarted_over_and_over(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """Three workers; every 3 s while records flow, one is killed (SIGKILL or SIGTERM) and
    started again. Each rebalance of this kind once lost records or state in Faust."""
    calls = list(traffic(150))
    expected = expected_finals(calls)
    bootstrap, choice = settings.kafka_bootstrap_servers, random.Random(11)
    kills: list[str] = []
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        workers = {name: start_worker(env, tmp_path / name) for name in "abc"}
        try:
            await asyncio.to_thread(await_ready, workers["a"])

            async def churn(done: asyncio.Event) -> None:
                while True:
                    try:
                        await asyncio.wait_for(done.wait(), timeout=3.0)
                        return
                    except TimeoutError:
                        name = choice.choice("abc")
                        sig = choice.choice([signal.SIGKILL, signal.SIGTERM])
                        await asyncio.to_thread(stop, workers[name], sig)
                        workers[name] = start_worker(env, tmp_path / name)
                        kills.append(f"{sig.name} {name}")

            async def phase(topic: str, records: list[tuple[bytes, bytes]], revision: int) -> Any:
                done = asyncio.Event()
                churning = asyncio.create_task(churn(done))
                for start in range(0, len(records), 10):
                    for key, value in records[start : start + 10]:
                        await producer.send(topic, value, key=key)
                    await producer.flush()
                    await asyncio.sleep(0.3)  # paces the traffic: about 30 records/s
                done.set()
                await churning
                return await revisions_on(bootstrap, names, revision, len(expected), 180)

            await phase(names.cdr_raw, [cdr_record(c, False) for c in calls], 1)
            await phase(names.cdr_raw, [cdr_record(c, True) for c in calls], 2)
            drs = [dr_record(c, n) for n, c in enumerate(calls)]
            events = await phase(names.dr_raw, drs, 3)
        finally:
            for process in workers.values():
                if process.poll() is None:
                    await asyncio.to_thread(stop, process, signal.SIGTERM)
    assert len(kills) >= 5, kills
    repeats = assert_exact(events, expected)
    print(f"{len(expected)} calls, {len(kills)} kills ({kills}), {repeats} exact repeats")


async def test_a_worker_forgets_the_calls_past_the_state_horizon(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """A call last changed 9 days ago leaves the table (a tombstone in its changelog), a
    call of today stays, and a new record of the forgotten call starts it at revision 1."""
    old, today = list(traffic(2))[:2]
    old_id, today_id = (normalize.from_dr(c.dr_fields(ZONE), ZONE).call_id for c in (old, today))
    now, bootstrap = datetime.now(UTC), settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        changelog = f"{group_id(Settings.from_env(env))}-calls-changelog"
        worker = start_worker({**env, "NXCLOUD_WORKER_EXPIRY_INTERVAL_SECONDS": "1",
                               "NXCLOUD_DEPLOYMENT": "eu-1", "NXCLOUD_ACCOUNT": "acct 7"},
                              tmp_path / "a")  # fmt: skip
        try:
            await asyncio.to_thread(await_ready, worker)
            for key, value in (
                dr_record(old, 0, now - timedelta(days=9)),
                dr_record(today, 1, now),
            ):
                await producer.send_and_wait(names.dr_raw, value, key=key)
            await revisions_on(bootstrap, names, 1, 2)
            forgotten = await read_topic(bootstrap, changelog, lambda keys: old_id.encode() in keys,
                                         deadline=60, pick=tombstone_key)  # fmt: skip
            assert today_id.encode() not in forgotten
            key, value = dr_record(old, 2, now)
            await producer.send_and_wait(names.dr_raw, value, key=key)
            events = await revisions_on(bootstrap, names, 1, 3)
        finally:
            await asyncio.to_thread(stop, worker, signal.SIGTERM)
    again = [e for e in events if e["call_id"] == old_id]
    assert [e["revision"] for e in again] == [1, 1]
    assert again[0]["event_id"] == again[1]["event_id"]
    assert again[1]["first_seen_at"] > again[0]["first_seen_at"]
    enveloped = await read_topic(bootstrap, names.call_events, lambda got: len(got) >= 3,
                                 pick=with_headers)  # fmt: skip
    assert_each_event_names_its_schema(enveloped, "/nxcloud-connector/eu-1/acct%207")


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


def unknown_uk_number() -> str:
    """A UK national number of a mobile's length in a range the metadata does not know."""
    for first in "7312":
        national = unallocated("GB", "7400123456", first, 12345)
        if national is not None:
            return national
    raise AssertionError("the metadata knows every UK number of 10 digits")


async def test_one_call_one_identity_one_duration_in_both_arrival_orders(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """A DR whose `duration` differs from its `second` (or cannot be read) and two CDR rows
    of the same call, the first giving the number in national form with its trunk prefix in
    a range the metadata does not know: one call per order, `duration_seconds` is `second`,
    the same final state whether the DR or the CDR row came first, no flip back."""
    uk = unknown_uk_number()
    numbers = {"uk": ("44", uk, "0" + uk, "25"), "cn": ("86", "15088888888", "15088888888", "0:19")}
    fields = {**EXAMPLE_FIELDS, "second": "19", "show_phone": "085944247"}
    row = {**CDR_GROUP_ROW, "second": 19, "show_phone": "85944247", "customer_price": 0.05}

    def records(name: str, order: str) -> dict[str, tuple[str, bytes, bytes]]:
        code, national, cdr_phone, duration = numbers[name]
        message = f"{name}-{order}"
        dr_fields = {**fields, "messageid": message, "phone": code + national,
                     "countryCode": code, "duration": duration}  # fmt: skip
        arrival = dr.Arrival(f"{message:0>32}", T0 + timedelta(minutes=1), "::1", "t", "POST", "")
        window = cdr.Window(0, T0, T0 + timedelta(hours=1))
        first = {**row, "messageid": message, "phone": cdr_phone, "countryCode": int(code)}
        settled = {**first, "customer_price": 0.04, "time": "2019-09-09 09:00:02"}
        return {
            "dr": (names.dr_raw, dr.key(dr_fields), dr.raw_record(dr_fields, arrival)),
            "cdr": (names.cdr_raw, cdr.key(first),
                    cdr.raw_record(first, window, 1, T0 + timedelta(minutes=5), "t")),
            "settled": (names.cdr_raw, cdr.key(settled),
                        cdr.raw_record(settled, window, 1, T0 + timedelta(minutes=30), "t")),
        }  # fmt: skip

    orders = {"dr-first": ("dr", "cdr", "settled"), "cdr-first": ("cdr", "dr", "settled")}
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        calls = {(n, o): records(n, o) for n in numbers for o in orders}
        worker = start_worker(env, tmp_path / "a")
        try:
            await asyncio.to_thread(await_ready, worker)
            for step in range(3):
                for (_, order), sent in calls.items():
                    topic, key, value = sent[orders[order][step]]
                    await producer.send(topic, value, key=key)
                await producer.flush()
                events = await revisions_on(bootstrap, names, step + 1, len(calls))
        finally:
            await asyncio.to_thread(stop, worker, signal.SIGTERM)
    by_message: dict[str, list[Any]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["revision"]):
        valid("call-event.v1.json", event)
        by_message[event["message_id"]].append(event)
    assert sorted(by_message) == sorted(f"{n}-{o}" for n, o in calls)
    same = ("call_id", "message_id", "event_id", "first_seen_at")
    for name, (code, national, _, _) in numbers.items():
        finals = []
        for order in orders:
            history = by_message[f"{name}-{order}"]
            assert [e["revision"] for e in history] == [1, 2, 3]
            assert len({e["call_id"] for e in history}) == 1
            for field in history[0]:
                values = [orjson.dumps(e[field]) for e in history]
                changed = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
                assert len(changed) == len(set(changed)), (name, order, field, values)
            finals.append({k: v for k, v in history[-1].items() if k not in same})
        assert finals[0] == finals[1], name
        final = finals[0]
        assert final["phone"] == f"+{code}{national}"
        assert final["duration_seconds"] == 19
        assert final["display_number"] == "085944247"
        assert final["billing"]["unit_price"] == "0.036"
        assert final["billing"]["cost_final"] is True
