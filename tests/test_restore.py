"""The worker's call store caught up from its changelog (connector/worker/changelog.py,
restore.py, store.py): each key's last value, tombstoned keys gone, the offset it reached
kept with the states; and a worker killed between the changelog's acknowledgement and the
store write loses nothing and repeats no revision with another content."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import rocksdict
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector import groups
from connector.local.broker import free_port
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import changelog
from connector.worker.restore import Restorer
from connector.worker.store import OFFSET_KEY, Store
from tests.worker_helpers import (
    await_ready,
    cdr_record,
    dr_record,
    revisions_on,
    scrape,
    start_worker,
    stop,
    topics_and_env,
    traffic,
)

PARTITIONS = 3


async def create(bootstrap: str, topic: str) -> None:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    try:
        await client.create_topics(
            [NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await client.close()


async def write(
    bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]
) -> dict[int, int]:
    """The records sent in order; each partition's last offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                enable_idempotence=True)  # fmt: skip
    async with producer:
        sent = [await producer.send(topic, value, key=key, partition=partition)
                for partition, key, value in records]  # fmt: skip
        return {meta.partition: meta.offset for meta in await asyncio.gather(*sent)}


async def test_the_reader_hands_over_each_partition_from_its_start_to_its_end(
    settings: Settings, topic_names: TopicNames
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    topic = f"{topic_names.dr_raw}-reader"
    await create(bootstrap, topic)
    await write(bootstrap, topic, [(p, b"k%d" % n, b"%d-%d" % (p, n))
                                   for n in range(300) for p in range(PARTITIONS)])  # fmt: skip
    options = {"bootstrap_servers": bootstrap}
    assert await changelog.ends(options, topic, [0, 1, 2]) == {0: 300, 1: 300, 2: 300}
    spans = {0: (0, 300), 1: (120, 250), 2: (300, 300)}
    got: dict[int, list[int]] = {p: [] for p in spans}
    finished: list[int] = []
    async for batches, done in changelog.read(options, topic, spans):
        for p, records in batches.items():
            assert records
            assert all(record.value == b"%d-%d" % (p, record.offset) for record in records)
            got[p] += [record.offset for record in records]
        assert not done & set(finished)
        finished += done
    assert got == {p: list(range(*span)) for p, span in spans.items()}
    assert sorted(finished) == sorted(spans)


def stored(data: Path) -> tuple[dict[bytes, bytes], dict[int, int]]:
    """What a stopped worker's RocksDB files hold: the calls, and each partition's offset."""
    calls: dict[bytes, bytes] = {}
    offsets: dict[int, int] = {}
    for path in sorted((data / "calls").iterdir()):
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())  # fmt: skip
        try:
            for key, value in db.items():
                assert isinstance(key, bytes)
                assert isinstance(value, bytes)
                if key == OFFSET_KEY:
                    offsets[int(path.name)] = int(value)
                else:
                    assert key not in calls, key
                    calls[key] = value
        finally:
            db.close()
    return calls, offsets


def caught_up(port: int, within: float = 120) -> dict[str, float]:
    """The worker's metrics once its first catch-up from the changelog ended."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        metrics = scrape(port)
        if metrics.get("nxcloud_worker_recovery_seconds", 0) > 0:
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"the worker on {port} did not catch up within {within} s")


def read_logs(directory: Path) -> list[str]:
    return [path.read_text() for path in sorted(directory.glob("a*.log"))]


def changes(rng: random.Random, keys: int, count: int) -> list[tuple[int, bytes, bytes | None]]:
    """Overwrites of `keys` keys (each on its own partition), about one in eight a tombstone."""
    picked = (rng.randrange(keys) for _ in range(count))
    return [(key % PARTITIONS, b"call-%d" % key,
             None if rng.random() < 0.125 else b"state-%d" % rng.randrange(10**9))
            for key in picked]  # fmt: skip


async def test_a_cold_restore_leaves_each_keys_last_value_and_the_offsets_to_go_on_from(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """A worker on RocksDB with an empty data directory restores a changelog of overwrites
    and tombstones; its files hold each key's last value and no deleted key.
    Started again with its files, it reads nothing; after more changes it reads only
    those, and the files match the changelog again."""
    rng = random.Random(5)
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (_, base, _):
        env = {**base, "NXCLOUD_WORKER_STORE": "rocksdb://", "NXCLOUD_WORKER_STATE_DAYS": "36500",
               "NXCLOUD_WORKER_EXPIRY_INTERVAL_SECONDS": "86400"}  # fmt: skip
        topic = f"{groups.worker(Settings.from_env(env))}-calls-changelog"
        await create(bootstrap, topic)
        expected: dict[bytes, bytes] = {}
        last: dict[int, int] = {}
        for round_, count in enumerate((20_000, 0, 10_500)):
            if count:
                records = changes(rng, 3000, count)
                last.update(await write(bootstrap, topic, records))
                for _, key, value in records:
                    if value is None:
                        expected.pop(key, None)
                    else:
                        expected[key] = value
            log = tmp_path / "a.log"  # `await_ready` reads it: each start has its own
            if log.exists():
                log.rename(tmp_path / f"a.{round_}.log")
            port = free_port()
            worker = start_worker({**env, "NXCLOUD_WORKER_METRICS_PORT": str(port)},
                                  tmp_path / "a")  # fmt: skip
            try:
                await asyncio.to_thread(await_ready, worker)
                metrics = await asyncio.to_thread(caught_up, port)
                restored = metrics["nxcloud_worker_restored_records_total"]
            finally:
                await asyncio.to_thread(stop, worker, signal.SIGTERM)
            assert restored == count, (round_, restored)
            calls, offsets = stored(tmp_path / "a")
            assert calls == expected, round_
            assert offsets == last, round_
    logs = read_logs(tmp_path)
    assert ["restored from the changelog" in log for log in logs] == [
        True,
        False,
        True,
    ], logs[-1][-3000:]
    assert not any("catching up from the changelog failed" in log for log in logs)


async def test_a_worker_killed_after_the_changelog_took_a_batch_but_before_its_store_did(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """The first batch's events and changelog records are acknowledged, then the worker
    exits before its store write (RocksDB, so the store it finds again is behind its
    changelog). Started again, it restores the batch from the changelog: the records read
    again (their offsets were never committed) emit nothing new or only exact repeats, and
    the next records of each call make revision 2, never a second revision 1."""
    calls = list(traffic(20))
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (names, base, producer):
        env = {**base, "NXCLOUD_WORKER_STORE": "rocksdb://"}
        crashing = start_worker({**env, "CRASH_AT_STORE_WRITE": "1"}, tmp_path / "a",
                                log=tmp_path / "crash.log",
                                module="tests.crash_worker")  # fmt: skip
        try:
            await asyncio.to_thread(await_ready, crashing)
            for number, call in enumerate(calls):
                key, value = dr_record(call, number)
                await producer.send(names.dr_raw, value, key=key)
            await producer.flush()
            assert await asyncio.to_thread(crashing.wait, 120) == 9
        finally:
            if crashing.poll() is None:
                await asyncio.to_thread(stop, crashing, signal.SIGKILL)
        port = free_port()
        worker = start_worker({**env, "NXCLOUD_WORKER_METRICS_PORT": str(port)}, tmp_path / "a")
        try:
            await asyncio.to_thread(await_ready, worker)
            restored = (await asyncio.to_thread(caught_up, port))[
                "nxcloud_worker_restored_records_total"
            ]
            await revisions_on(bootstrap, names, 1, len(calls))
            for key, value in (cdr_record(call, True) for call in calls):
                await producer.send(names.cdr_raw, value, key=key)
            await producer.flush()
            events = await revisions_on(bootstrap, names, 2, len(calls))
        finally:
            await asyncio.to_thread(stop, worker, signal.SIGTERM)
    assert restored > 0  # the batch the killed worker's store never took
    by_revision: dict[tuple[str, int], set[str]] = {}
    for event in events:
        by_revision.setdefault((event["call_id"], event["revision"]), set()).add(event["event_id"])
    assert all(len(ids) == 1 for ids in by_revision.values()), "a revision with two contents"
    assert sorted(revision for _, revision in by_revision) == [1] * len(calls) + [2] * len(calls)


async def test_a_catch_up_holds_its_partitions_and_readiness_until_they_are_restored(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """In process, on the real broker: while the catch-up of an assignment runs, the
    readiness marker says so; once it ends the marker is gone, each partition holds its
    changelog's last values and offsets, durable (RocksDB, written without its log, then
    flushed); a partition that goes is closed and keeps its files."""
    bootstrap = settings.kafka_bootstrap_servers
    topic = f"{topic_names.dr_raw}-restorer"
    await create(bootstrap, topic)
    records: list[tuple[int, bytes, bytes | None]] = [
        (p, b"%d-%d" % (p, n), b"state %d" % n) for n in range(50) for p in range(PARTITIONS)
    ]
    last = await write(bootstrap, topic, records)
    released = asyncio.Event()

    async def declare() -> None:
        await released.wait()  # the catch-up is under way until this returns

    marker, store = tmp_path / "not-ready", Store("rocksdb://", tmp_path / "calls")
    restorer = Restorer(store, topic, options=lambda: {"bootstrap_servers": bootstrap},
                        declare=declare, lock=asyncio.Lock(), not_ready=marker)  # fmt: skip
    await restorer.assign({0, 1})
    assert marker.read_text() == "catching up from the changelog: partitions [0, 1]\n"
    released.set()
    await asyncio.wait_for(restorer.wait({0, 1}), timeout=60)
    assert not marker.exists()
    assert [store.get(p, b"%d-49" % p) for p in (0, 1)] == [b"state 49", b"state 49"]
    assert {p: store.partitions[p].offset for p in (0, 1)} == {0: last[0], 1: last[1]}
    await restorer.assign({1})
    assert restorer.closing is not None
    await restorer.closing
    assert set(store.partitions) == {1}
    await restorer.stop()
    files, offsets = stored(tmp_path)
    assert offsets == {0: last[0], 1: last[1]}
    assert files == {b"%d-%d" % (p, n): b"state %d" % n for p in (0, 1) for n in range(50)}
