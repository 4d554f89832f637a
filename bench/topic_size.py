"""Call-event topic size: bytes per call on a real broker, before and after compaction.

Merges calls as the worker does (a provisional CDR row, the settled row, the DR: three
revisions each), writes the events with their CloudEvents headers, as the worker does,
to topics of the call-event topic's configs on a fresh local broker: one compacted
(the cleaner made eager: segments roll after 15 s, no compaction lag), the same with the
topic's compression.type zstd (the broker compresses), and one that keeps every revision.
Then it reads the size of the partitions' log segments in the broker's data directory,
once the cleaner has left one revision per call.
Run: `python -m bench.topic_size [--calls 20000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector import admin, clients, envelope
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings
from connector.topics import TopicNames, TopicSpec, declare

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PARTITIONS = 6
ROLL_MS = 15_000


def revisions(calls: int) -> Iterator[list[dict[str, Any]]]:
    """Each call's events, in order."""
    world, made, message = sandbox.World(seed=7, origin=T0, rate=50.0), 0, 0
    while True:
        for call in world.calls(message):
            yield call.events(ZONE)
            made += 1
            if made == calls:
                return
        message += 1


def log_bytes(data_dir: Path, topic: str) -> int:
    """The bytes of the topic's log segments (not the preallocated index files)."""
    return sum(path.stat().st_size for path in data_dir.glob(f"{topic}-*/*.log"))


async def records_on(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(**clients.options(settings, enable_auto_commit=False))
    async with admin.running(consumer):
        partitions = await admin.partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends, count = await consumer.end_offsets(partitions), 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            count += sum(len(records) for records in batches.values())
    return count


async def produce(settings: Settings, topics: list[str], per_call: list[list[dict[str, Any]]],
                  source: str) -> tuple[int, int, int]:  # fmt: skip
    """Revision 1 of every call, then revision 2, ... (as time passes); the values' and
    headers' bytes of the last revisions."""
    producer = AIOKafkaProducer(**clients.options(settings, acks="all", enable_idempotence=True))
    value_bytes = header_bytes = sent = 0
    async with producer:
        for revision in range(max(len(events) for events in per_call)):
            pending = []
            for events in per_call:
                if revision >= len(events):
                    continue
                event = events[revision]
                value, headers = orjson.dumps(event), envelope.headers(event, source)
                if revision == len(events) - 1:
                    value_bytes += len(value)
                    header_bytes += sum(len(k) + len(v) for k, v in headers)
                for topic in topics:
                    pending.append(await producer.send(
                        topic, value, key=event["call_id"].encode(), headers=headers))  # fmt: skip
                sent += 1
            await asyncio.gather(*pending)
    return sent, value_bytes, header_bytes


async def roll(settings: Settings, topic: str) -> None:
    """One small record per partition once the segments are older than segment.ms: the
    next append rolls them, so the cleaner may compact all of the events."""
    await asyncio.sleep(ROLL_MS / 1000 + 1)
    producer = AIOKafkaProducer(**clients.options(settings, acks="all"))
    async with producer:
        for partition in range(PARTITIONS):
            await producer.send_and_wait(topic, b"{}", key=b"roll", partition=partition)


async def compacted_size(data_dir: Path, topic: str) -> int:
    """The topic's log bytes once they stayed the same for 8 s (the cleaner is done)."""
    deadline, stable, last = time.monotonic() + 300, 0, -1
    while time.monotonic() < deadline and stable < 8:
        await asyncio.sleep(1)
        size = log_bytes(data_dir, topic)
        stable, last = (stable + 1, last) if size == last else (0, size)
    return last


async def run(calls: int, data_dir: Path, bootstrap: str) -> None:
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_partitions=PARTITIONS)
    names = TopicNames().with_suffix("bench")
    events_spec = next(s for s in declare(settings, names) if s.name == names.call_events)
    compacted = TopicSpec(
        events_spec.name, PARTITIONS, 1,
        {**events_spec.config, "segment.ms": str(ROLL_MS), "min.compaction.lag.ms": "0",
         "min.cleanable.dirty.ratio": "0.01"},
    )  # fmt: skip
    every = TopicSpec(f"{events_spec.name}.every", PARTITIONS, 1, {"cleanup.policy": "delete"})
    zstd = TopicSpec(f"{events_spec.name}.zstd", PARTITIONS, 1,
                     {**compacted.config, "compression.type": "zstd"})  # fmt: skip
    await admin.converge(settings, (compacted, every, zstd))
    per_call = list(revisions(calls))
    started = time.monotonic()
    sent, value_bytes, header_bytes = await produce(
        settings, [compacted.name, every.name, zstd.name], per_call, envelope.source(settings)
    )
    print(f"calls: {calls}, events (revisions): {sent} ({sent / calls:.2f} per call), "
          f"produced to 3 topics in {time.monotonic() - started:.1f} s")  # fmt: skip
    print(f"last revision: value {value_bytes / calls:.0f} B, headers {header_bytes / calls:.0f} B"
          " per call (uncompressed, as the worker writes them)")  # fmt: skip
    await asyncio.gather(roll(settings, compacted.name), roll(settings, zstd.name))
    last, zstd_size = await asyncio.gather(
        compacted_size(data_dir, compacted.name), compacted_size(data_dir, zstd.name)
    )
    left = await records_on(settings, compacted.name)
    every_size = log_bytes(data_dir, every.name)
    print(f"every revision kept:   {every_size:>12,} B  {every_size / sent:7.0f} B per revision"
          f"  {every_size / calls:7.0f} B per call")  # fmt: skip
    print(f"compacted:             {last:>12,} B  {left:,} records left "
          f"(calls + {PARTITIONS} roll records)  {last / calls:7.0f} B per call")  # fmt: skip
    # Not read back: aiokafka reads zstd only with the zstandard package installed.
    print(f"compacted, zstd topic:  {zstd_size:>12,} B  {zstd_size / calls:7.0f} B per call")
    print(f"per million calls, one replica: compacted {last / calls / 1000:.2f} GB "
          f"(zstd {zstd_size / calls / 1000:.2f} GB), "
          f"every revision {every_size / calls / 1000:.2f} GB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.topic_size")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-topic-size-") as tmp:
        config = BrokerConfig(data_dir=Path(tmp), port=free_port(), controller_port=free_port())
        with LocalKafka(config) as local:
            asyncio.run(run(args.calls, config.data_dir / "data", local.bootstrap_servers))


if __name__ == "__main__":
    main()
