"""Recovery benchmark: restores, rolling restarts and a lost worker, each with its figure.

The table's changelog is filled with N calls (the state one DR each leaves, written
straight to the changelog partitions a worker would have used: merging a million DRs
first would take a quarter of an hour here and measure nothing of the restore). Then:

- a worker on the memory store with an empty data directory (it reads the whole
  changelog), one on RocksDB with an empty data directory (a pod that lost its disk: a cold
  restore), and one on RocksDB keeping that directory (a pod restarted with its claim: it
  reads only the changelog's tail); each prints the time from start to Faust's "Ready",
  the recovery and the restore rate its metrics report, and its resident memory;
- once two workers (instance ids, RocksDB, one standby) have restored their partitions
  and their standbys, a rolling restart of both (their directories kept) while DRs of
  new calls flow at a steady rate: the longest push-to-event delay, and the
  changelog records each restarted worker applied (a partition restored in full would
  be N / partitions of them);
- a worker killed with its disk lost (and not restarted, like a pod on a lost node) while
  the second holds standbys: the time from the kill until its partitions emit again.

Run: `make bench-recovery` (or `python -m bench.recovery --calls 1000000`); `--only cold`
(repeatable: memory, cold, kept, rolling, lost) runs some cases, `--profile PATH` samples
each restart with py-spy (installed separately) into PATH.<case>, collapsed stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.worker import PARTITIONS, T0, ZONE, Process, Stage
from connector import codec, dr, identity, normalize
from connector.identity import call_key, partition_of
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.merge import merge

FLOW_PER_SECOND = 50  # DRs of new calls while workers restart
SESSION_SECONDS = 30  # the workers' session timeout in the rolling restart
LOST_SESSION_SECONDS = 10  # and with a worker lost: how long before its partitions move


def scrape(port: int, name: str) -> float:
    for line in metrics(port):
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} not served")


def start(
    stage: Stage,
    data: Path,
    store: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    profile: Path | None = None,
) -> tuple[Process, int, float]:
    """A worker, once ready: with `profile`, py-spy samples it until then (collapsed stacks,
    every thread, into that file)."""
    port = free_port()
    environment = stage.env(
        NXCLOUD_WORKER_DATA_DIR=str(data), NXCLOUD_WORKER_STORE=store,
        NXCLOUD_WORKER_METRICS_PORT=str(port), **(env or {}),
    )  # fmt: skip
    started = time.monotonic()
    process = Process(["worker"], environment, log)
    spy = None
    if profile is not None:
        spy = subprocess.Popen([
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
            str(process.popen.pid), "--format", "raw", "--threads", "--rate", "50",
            "--output", str(profile),
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        process.await_line("[^Worker]: Ready", timeout=3600)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    return process, port, time.monotonic() - started


def states(calls: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(partition, key, value) of each call's changelog record after its one DR."""
    call = sandbox.World(seed=7, origin=T0, rate=50.0).calls(0)[0]
    template, _ = merge(None, normalize.from_dr(call.dr_fields(ZONE), ZONE), T0)
    for number in range(calls):
        message_id = f"bench-{number}"
        call_id = identity.call_id(template.service, message_id, template.phone)
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


RESTARTS: Final = (
    ("memory", "memory store, empty data dir", "memory://", False),
    ("cold", "RocksDB, empty data dir (cold restore)", "rocksdb://", False),
    ("kept", "RocksDB, data dir kept (restarted with its claim)", "rocksdb://", True),
)
CASES: Final = (*(case for case, *_ in RESTARTS), "rolling", "lost")


async def run(
    bootstrap: str, scratch: Path, calls: int, cases: set[str], profile: Path | None
) -> None:
    stage = Stage(bootstrap, "recovery")
    await stage.create()
    took = await fill(stage, scratch, calls)
    print(f"recovery: {calls:,} calls written to the table's changelog in {took:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    for case, name, store, keep in RESTARTS:
        if case not in cases:
            continue
        data = scratch / "rocksdb"
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        process, port, seconds = start(
            stage, data, store, scratch / f"{case}.log",
            profile=profile.with_name(f"{profile.name}.{case}") if profile else None,
        )  # fmt: skip
        try:
            recovery = scrape(port, "nxcloud_worker_recovery_seconds")
            rate = scrape(port, "nxcloud_worker_restore_records_per_second")
            rss = process.rss_mb()
        finally:
            process.stop()
        print(f"  {name:50} ready after {seconds:6.1f} s (recovery {recovery:6.1f} s, "
              f"{rate:8,.0f} records/s), RSS {rss:5.0f} MB, {megabytes(data):5.0f} MB on disk, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if "rolling" in cases:
        await rolling_restart(stage, scratch, calls)
    if "lost" in cases:
        await lost_worker(stage, scratch, calls)


def megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


class Pair:
    """Two workers with instance ids on RocksDB, their directories under `scratch`."""

    def __init__(self, stage: Stage, scratch: Path, **env: str) -> None:
        self.stage, self.scratch = stage, scratch
        self.env = {"NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS": str(SESSION_SECONDS), **env}
        self.workers: dict[str, tuple[Process, int]] = {}
        scratch.mkdir(parents=True, exist_ok=True)

    async def start(self, name: str) -> None:
        process, port, _ = await asyncio.to_thread(
            start, self.stage, self.scratch / name, "rocksdb://",
            self.scratch / f"{name}.{len(self.workers)}.log",
            env={"NXCLOUD_WORKER_INSTANCE_ID": name, **self.env},
        )  # fmt: skip
        self.workers[name] = (process, port)

    def stop(self) -> None:
        for process, _ in self.workers.values():
            process.stop()

    async def settled(self, calls: int) -> None:
        """Until each worker has applied every call: its actives and its standbys (two
        workers, one standby each), so that the restart measured is not a cold start."""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            ports = [port for _, port in self.workers.values()]
            # Faust applies a standby's records in batches (1,000): the last ones of each
            # partition wait for the next, so a settled worker shows slightly fewer.
            if all(scrape(port, "nxcloud_worker_restored_records_total") >= 0.99 * calls
                   for port in ports):  # fmt: skip
                return
            await asyncio.sleep(1)
        raise RuntimeError("the workers did not restore their partitions in time")


class Flow:
    """DRs of new calls at a steady rate, and when each one's call event appeared."""

    def __init__(self, stage: Stage, name: str) -> None:
        self.stage, self.prefix = stage, f"{name}-"  # new calls: no case repeats another's
        self.sent: dict[str, tuple[float, int]] = {}  # message id: (sent at, partition)
        self.emitted: dict[str, float] = {}
        self.done = asyncio.Event()

    async def produce(self) -> None:
        call = sandbox.World(seed=7, origin=T0, rate=50.0).calls(0)[0]
        fields = call.dr_fields(ZONE)
        producer = AIOKafkaProducer(**self.stage.kafka(acks="all", enable_idempotence=True))
        async with producer:
            number, started = 0, time.time()
            while not self.done.is_set():
                fields["messageid"] = message_id = f"{self.prefix}{number}"
                arrival = dr.Arrival(f"{number:032x}", T0, "127.0.0.1", "b", "POST", "")
                key = identity.dr_key(fields)
                self.sent[message_id] = (time.time(), partition_of(key, PARTITIONS))
                await producer.send_and_wait(
                    self.stage.names.dr_raw, dr.raw_record(fields, arrival), key=key
                )
                number += 1
                await asyncio.sleep(max(0.0, started + number / FLOW_PER_SECOND - time.time()))

    async def consume(self) -> None:
        consumer = AIOKafkaConsumer(
            self.stage.names.call_events,
            **self.stage.kafka(auto_offset_reset="latest", enable_auto_commit=False),
        )  # fmt: skip
        async with consumer:
            while not (self.done.is_set() and set(self.sent) <= set(self.emitted)):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        event = orjson.loads(record.value or b"{}")
                        message_id = event.get("message_id", "")
                        if message_id.startswith(self.prefix):
                            self.emitted.setdefault(message_id, record.timestamp / 1000)

    def delays(self, partitions: set[int] | None = None) -> dict[str, float]:
        return {
            message_id: self.emitted[message_id] - sent_at
            for message_id, (sent_at, partition) in self.sent.items()
            if message_id in self.emitted and (partitions is None or partition in partitions)
        }


async def flowing(flow: Flow) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    consuming = asyncio.create_task(flow.consume())
    await asyncio.sleep(2)  # the consumer has its partitions: "latest" starts from here
    return asyncio.create_task(flow.produce()), consuming


async def finish(flow: Flow, tasks: tuple[asyncio.Task[None], asyncio.Task[None]]) -> None:
    flow.done.set()
    await tasks[0]
    await asyncio.wait_for(tasks[1], timeout=600)


async def rolling_restart(stage: Stage, scratch: Path, calls: int) -> None:
    """Both workers restarted in turn with their ids and directories while DRs flow."""
    pair = Pair(stage, scratch / "rolling")
    await asyncio.gather(pair.start("worker-0"), pair.start("worker-1"))
    await pair.settled(calls)
    flow = Flow(stage, "rolling")
    tasks = await flowing(flow)
    restored = []
    try:
        await asyncio.sleep(5)
        for name in ("worker-0", "worker-1"):
            pair.workers[name][0].stop()
            await pair.start(name)
            restored.append(scrape(pair.workers[name][1], "nxcloud_worker_restored_records_total"))
            await asyncio.sleep(5)
        await finish(flow, tasks)
    finally:
        pair.stop()
    delays = flow.delays()
    print(f"  rolling restart of 2 workers, {FLOW_PER_SECOND} DRs/s, {len(delays)} DRs: "
          f"longest push-to-event delay {max(delays.values()):5.1f} s "
          f"(median {statistics.median(delays.values()):.2f} s); changelog records applied "
          f"by the restarted workers {restored[0]:,.0f} and {restored[1]:,.0f} "
          f"(a whole partition: {calls // PARTITIONS:,}), "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


async def lost_worker(stage: Stage, scratch: Path, calls: int) -> None:
    """One of two workers killed, its directory deleted, not started again; standbys on."""
    pair = Pair(stage, scratch / "lost", NXCLOUD_WORKER_STANDBY_REPLICAS="1",
                NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS=str(LOST_SESSION_SECONDS))  # fmt: skip
    await asyncio.gather(pair.start("worker-0"), pair.start("worker-1"))
    await pair.settled(calls)
    flow = Flow(stage, "lost")
    tasks = await flowing(flow)
    try:
        await asyncio.sleep(5)
        process, port = pair.workers["worker-0"]
        held = {int(line.split('partition="')[1].split('"')[0])
                for line in metrics(port) if line.startswith("nxcloud_worker_lag{")
                and stage.names.dr_raw in line}  # fmt: skip
        process.popen.kill()
        killed = time.time()
        shutil.rmtree(scratch / "lost" / "worker-0", ignore_errors=True)
        await asyncio.sleep(LOST_SESSION_SECONDS + 30)
        await finish(flow, tasks)
    finally:
        pair.stop()
    after = {
        m: flow.emitted[m]
        for m, (sent, partition) in flow.sent.items()
        if sent > killed and partition in held and m in flow.emitted
    }
    print(f"  a worker killed, its disk lost, the other with standbys (session timeout "
          f"{LOST_SESSION_SECONDS} s): its partitions {sorted(held)} emit again "
          f"{min(after.values()) - killed:5.1f} s after the kill, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines: list[str] = answer.read().decode().splitlines()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--only", choices=CASES, action="append", help="a case (repeatable)")
    parser.add_argument("--profile", type=Path, help="py-spy each restart until ready: "
                        "collapsed stacks in PROFILE.<case>")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        config = BrokerConfig(scratch / "kafka", free_port(), free_port(), heap="1g")
        with LocalKafka(config) as kafka:
            asyncio.run(run(kafka.bootstrap_servers, scratch, args.calls,
                            set(args.only or CASES), args.profile))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
