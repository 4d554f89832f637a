"""Faust workers over three partitions turn DRs and CDRs into call revisions, and lose
nothing when they are killed."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector import groups, normalize
from connector.local.broker import free_port
from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic, tombstone_key
from tests.support import ZONE, valid
from tests.worker_helpers import (
    assert_each_event_names_its_schema,
    await_ready,
    cdr_record,
    dr_record,
    expected_finals,
    revisions_on,
    scrape,
    start_worker,
    stop,
    topics_and_env,
    traffic,
    with_headers,
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
        changelog = f"{groups.worker(Settings.from_env(env))}-calls-changelog"
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


def held(port: int, topic: str) -> set[int]:
    """The partitions of `topic` the worker behind `port` holds (its lag gauges)."""
    prefix = 'nxcloud_worker_lag{partition="'
    return {int(name[len(prefix):].split('"')[0]) for name in scrape(port)
            if name.startswith(prefix) and f'topic="{topic}"' in name}  # fmt: skip


def await_holding(port: int, topic: str, count: int, within: float = 120) -> set[int]:
    """The partitions the worker holds, once it serves its lag for `count` or more."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            partitions = held(port, topic)
        except OSError:
            partitions = set()
        if len(partitions) >= count:
            return partitions
        time.sleep(0.2)
    raise AssertionError(f"the worker on {port} holds no {topic} partitions")


async def test_a_worker_restarted_with_its_instance_id_and_data_takes_its_partitions_back(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """Static membership: two workers with instance ids on RocksDB; one is stopped and
    started again with its id and data directory. It holds the same partitions, the other
    worker sees no rebalance, the restarted one reads (almost) none of the changelog, and
    every call goes on to its next revision (no revision 1 again)."""
    calls = list(traffic(30))
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (names, base, producer):
        env = {**base, "NXCLOUD_WORKER_STORE": "rocksdb://",
               "NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS": "60"}  # fmt: skip
        ports = {name: free_port() for name in ("a", "b", "a2")}

        def worker(name: str, port: str) -> subprocess.Popen[str]:
            return start_worker({**env, "NXCLOUD_WORKER_INSTANCE_ID": f"worker-{name}",
                                 "NXCLOUD_WORKER_METRICS_PORT": port}, tmp_path / name)  # fmt: skip

        first, second = worker("a", str(ports["a"])), worker("b", str(ports["b"]))
        try:
            await asyncio.to_thread(await_ready, first)
            await asyncio.to_thread(await_ready, second)
            for key, value in (cdr_record(c, False) for c in calls):
                await producer.send(names.cdr_raw, value, key=key)
            await producer.flush()
            await revisions_on(bootstrap, names, 1, len(calls))
            mine = await asyncio.to_thread(await_holding, ports["a"], names.cdr_raw, 1)
            theirs = await asyncio.to_thread(await_holding, ports["b"], names.cdr_raw, 1)
            assert mine | theirs == {0, 1, 2}
            assert not mine & theirs
            rebalances = scrape(ports["b"])["nxcloud_worker_rebalances_total"]
            await asyncio.to_thread(stop, first, signal.SIGTERM)
            first = worker("a", str(ports["a2"]))
            await asyncio.to_thread(await_ready, first)
            again = await asyncio.to_thread(await_holding, ports["a2"], names.cdr_raw, len(mine))
            assert again == mine
            assert held(ports["b"], names.cdr_raw) == theirs
            assert scrape(ports["b"])["nxcloud_worker_rebalances_total"] == rebalances
            restored = scrape(ports["a2"])["nxcloud_worker_restored_records_total"]
            assert restored < len(calls) / 3, restored  # only the tail, not its partitions
            for key, value in (cdr_record(c, True) for c in calls):
                await producer.send(names.cdr_raw, value, key=key)
            await producer.flush()
            events = await revisions_on(bootstrap, names, 2, len(calls))
        finally:
            for process in (first, second):
                if process.poll() is None:
                    await asyncio.to_thread(stop, process, signal.SIGTERM)
    assert sorted(e["revision"] for e in events) == [1] * len(calls) + [2] * len(calls)


async def test_a_worker_on_a_fresh_machine_makes_its_data_directory(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """No ~/.local/share yet: Faust makes only the last directory of its data dir."""
    home = tmp_path / "fresh" / "share"
    async with topics_and_env(settings, topic_names) as (_names, env, _producer):
        fresh = {**env, "XDG_DATA_HOME": str(home)}
        fresh.pop("NXCLOUD_WORKER_DATA_DIR", None)
        log = tmp_path / "worker.log"
        process = start_worker(fresh, home, log=log, default_data_dir=True)
        try:
            await asyncio.to_thread(await_ready, process)
        finally:
            await asyncio.to_thread(stop, process, signal.SIGTERM)
    assert (home / "nxcloud-connector" / "worker").is_dir()


async def test_a_worker_refuses_a_changelog_of_another_partition_count(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """A call's state lives on its source partition's number: a changelog left with two
    partitions by another deployment, beside sources of three, stops the worker at start
    with what it found, before it merges anything."""
    async with topics_and_env(settings, topic_names) as (_names, env, _producer):
        changelog = f"{groups.worker(Settings.from_env(env))}-calls-changelog"
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(changelog, 2, 1)])
        finally:
            await admin.close()
        worker = start_worker(env, tmp_path / "a")
        assert await asyncio.to_thread(worker.wait, 120) == 5
    log = (tmp_path / "a.log").read_text()
    assert f"{changelog} 2" in log
    assert "must have the same number of partitions" in log
