"""A restore read straight from the changelog (connector/worker/changelog.py, recovery.py)
leaves the table as the changelog says: each key's last value, tombstoned keys gone, and
the offsets Faust keeps where the next restore must start."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import rocksdict
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.stores.rocksdb import Store
from faust.types import TP

from connector.local.broker import free_port
from connector.records import group_id
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import changelog
from connector.worker.recovery import STRAIGHT_FROM
from tests.worker_helpers import await_ready, scrape, start_worker, stop, topics_and_env

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
    spans = {TP(topic, 0): (0, 300), TP(topic, 1): (120, 250), TP(topic, 2): (300, 300)}
    got: dict[TP, list[int]] = {tp: [] for tp in spans}
    finished: list[TP] = []
    async for batches, done in changelog.read({"bootstrap_servers": bootstrap}, spans):
        for tp, records in batches.items():
            assert records
            assert all(record.value == b"%d-%d" % (tp.partition, record.offset)
                       for record in records)  # fmt: skip
            got[tp] += [record.offset for record in records]
        assert not done & set(finished)
        finished += done
    assert got == {tp: list(range(*span)) for tp, span in spans.items()}
    assert sorted(finished) == sorted(spans)


def stored(data: Path) -> tuple[dict[bytes, bytes], dict[int, int]]:
    """What a stopped worker's RocksDB files hold: the table, and each partition's offset."""
    table: dict[bytes, bytes] = {}
    offsets: dict[int, int] = {}
    for path in data.rglob("*-[0-9]*.db"):
        partition = int(path.name.removesuffix(".db").rsplit("-", 1)[1])
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())  # fmt: skip
        try:
            for key, value in db.items():
                assert isinstance(key, bytes)
                assert isinstance(value, bytes)
                if key == Store.offset_key:
                    offsets[partition] = int(value)
                else:
                    assert key not in table, key
                    table[key] = value
        finally:
            db.close()
    return table, offsets


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
    and tombstones straight; its files hold each key's last value and no deleted key.
    Started again with its files, it reads nothing; after more changes it reads only
    those, and the files match the changelog again."""
    rng = random.Random(5)
    bootstrap = settings.kafka_bootstrap_servers
    async with topics_and_env(settings, topic_names) as (_, base, _):
        env = {**base, "NXCLOUD_WORKER_STORE": "rocksdb://", "NXCLOUD_WORKER_STATE_DAYS": "36500",
               "NXCLOUD_WORKER_EXPIRY_INTERVAL_SECONDS": "86400"}  # fmt: skip
        topic = f"{group_id(Settings.from_env(env))}-calls-changelog"
        await create(bootstrap, topic)
        expected: dict[bytes, bytes] = {}
        last: dict[int, int] = {}
        for round_, count in enumerate((2 * STRAIGHT_FROM, 0, STRAIGHT_FROM + 500)):
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
                restored = scrape(port)["nxcloud_worker_restored_records_total"]
            finally:
                await asyncio.to_thread(stop, worker, signal.SIGTERM)
            assert restored == count, (round_, restored)
            table, offsets = stored(tmp_path / "a")
            assert table == expected, round_
            assert offsets == last, round_
    logs = read_logs(tmp_path)
    assert ["restored straight from the changelog" in log for log in logs] == [
        True,
        False,
        True,
    ], logs[-1][-3000:]
    assert not any("straight from the changelog failed" in log for log in logs)
