"""Recovery benchmark: how long a restarted worker holding N calls takes to be ready.

The table's changelog is filled with N calls (the state one DR each leaves, written
straight to the changelog partitions a worker would have used: merging a million DRs
first would take a quarter of an hour here and measure nothing of the restore). Then,
one at a time: a worker on the memory store with an empty data directory (it reads the
whole changelog), one on RocksDB with an empty data directory (a pod that lost its disk:
a cold restore), and one on RocksDB keeping that directory (a pod restarted with its
claim: it reads only the changelog's tail). Each prints the time from start to Faust's
"Ready", the recovery and the restore rate its metrics report, and its resident memory.
Run: `make bench-recovery` (or `python -m bench.recovery --calls 1000000`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.worker import PARTITIONS, T0, ZONE, Process, Stage
from connector import codec, normalize
from connector.keys import call_key, partition_of
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.merge import merge


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{name} not served")


def start(
    stage: Stage, data: Path, store: str, log: Path, **env: str
) -> tuple[Process, int, float]:
    port = free_port()
    environment = stage.env(
        NXCLOUD_WORKER_DATA_DIR=str(data), NXCLOUD_WORKER_STORE=store,
        NXCLOUD_WORKER_METRICS_PORT=str(port), **env,
    )  # fmt: skip
    started = time.monotonic()
    process = Process(["worker"], environment, log)
    process.await_line("[^Worker]: Ready", timeout=3600)
    return process, port, time.monotonic() - started


def states(calls: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(partition, key, value) of each call's changelog record after its one DR."""
    call = sandbox.World(seed=7, origin=T0, rate=50.0).calls(0)[0]
    template, _ = merge(None, normalize.from_dr(call.dr_fields(ZONE), ZONE), T0)
    for number in range(calls):
        message_id = f"bench-{number}"
        call_id = normalize.call_id(template.service, message_id, template.phone)
        state = dataclasses.replace(template, message_id=message_id, call_id=call_id)
        partition = partition_of(call_key(message_id, state.phone_raw), PARTITIONS)
        yield partition, call_id.encode(), codec.encode_state(state)


async def fill(stage: Stage, scratch: Path, calls: int) -> float:
    """Let a worker create its changelog, then write `calls` states into it: seconds."""
    process, _, _ = start(stage, scratch / "fill", "memory://", scratch / "fill.log")
    process.stop()
    producer = AIOKafkaProducer(**stage.kafka(
        acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=256 * 1024,
    ))  # fmt: skip
    topic, started = f"{stage.group}-calls-changelog", time.monotonic()
    async with producer:
        pending = []
        for partition, key, value in states(calls):
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    return time.monotonic() - started


async def run(bootstrap: str, scratch: Path, calls: int) -> None:
    stage = Stage(bootstrap, "recovery")
    await stage.create()
    took = await fill(stage, scratch, calls)
    print(f"recovery: {calls:,} calls written to the table's changelog in {took:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    for name, store, keep in (
        ("memory store, empty data dir", "memory://", False),
        ("RocksDB, empty data dir (cold restore)", "rocksdb://", False),
        ("RocksDB, data dir kept (restarted with its claim)", "rocksdb://", True),
    ):
        data = scratch / "rocksdb"
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        process, port, seconds = start(stage, data, store, scratch / f"{len(name)}.log")
        try:
            recovery = scrape(port, "nxcloud_worker_recovery_seconds")
            rate = scrape(port, "nxcloud_worker_restore_records_per_second")
            rss = process.rss_mb()
        finally:
            process.stop()
        print(f"  {name:50} ready after {seconds:6.1f} s (recovery {recovery:6.1f} s, "
              f"{rate:8,.0f} records/s), RSS {rss:5.0f} MB, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        config = BrokerConfig(scratch / "kafka", free_port(), free_port(), heap="1g")
        with LocalKafka(config) as kafka:
            asyncio.run(run(kafka.bootstrap_servers, scratch, args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
