"""Recovery benchmark: how long a restarted worker holding N calls takes to be ready.

One worker merges N calls (one DR each) into its table, then stops. Then, one at a time:
a worker on the memory store with an empty data directory (it reads the whole changelog),
one on RocksDB with an empty data directory (a pod rescheduled: it rebuilds its files from
the changelog), and one on RocksDB keeping that directory (a container restarted in its
pod: it reads only the changelog's tail). Each prints the time from start to Faust's
"Ready", the recovery its metrics report, and its resident memory once ready.
Run: `make bench-recovery` (or `python -m bench.recovery --calls 1000000`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.worker import Process, Stage, await_drained, one_dr_per_call, produce
from connector.local.broker import BrokerConfig, LocalKafka, free_port


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{name} not served")


def start(stage: Stage, data: Path, store: str, log: Path) -> tuple[Process, int, float]:
    port = free_port()
    env = stage.env(
        NXCLOUD_WORKER_DATA_DIR=str(data), NXCLOUD_WORKER_STORE=store,
        NXCLOUD_WORKER_METRICS_PORT=str(port),
    )  # fmt: skip
    started = time.monotonic()
    process = Process(["worker"], env, log)
    process.await_line("[^Worker]: Ready", timeout=3600)
    return process, port, time.monotonic() - started


async def run(bootstrap: str, scratch: Path, calls: int) -> None:
    stage = Stage(bootstrap, "recovery")
    await stage.create()
    produced = time.monotonic()
    await produce(stage, one_dr_per_call(calls))
    took = time.monotonic() - produced
    print(f"recovery: {calls:,} calls (one DR each) produced in {took:.0f} s")
    filling, _, _ = start(stage, scratch / "fill", "memory://", scratch / "fill.log")
    merged = time.monotonic()
    try:
        await await_drained(stage, filling, time.monotonic() + 3600)
    finally:
        filling.stop()
    print(f"  merged into state in {time.monotonic() - merged:.0f} s by one worker")
    for name, store, keep in (
        ("memory store, empty data dir", "memory://", False),
        ("RocksDB, empty data dir (pod rescheduled)", "rocksdb://", False),
        ("RocksDB, data dir kept (container restarted)", "rocksdb://", True),
    ):
        data = scratch / "rocksdb"
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        process, port, seconds = start(stage, data, store, scratch / f"{len(name)}.log")
        try:
            recovery = scrape(port, "nxcloud_worker_recovery_seconds")
            rss = process.rss_mb()
        finally:
            process.stop()
        print(f"  {name:46} ready after {seconds:6.1f} s "
              f"(recovery {recovery:6.1f} s), RSS {rss:5.0f} MB")  # fmt: skip


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
