"""Recovery benchmark: restores, a rolling restart and a lost disk, each with its figure.

The call store's changelog is filled with N calls (the state one DR each leaves, written
straight to the changelog partition the worker writes it to, the call's source partition:
merging a million DRs first would take a quarter of an hour here and measure nothing of
the restore). Then:

- a worker on the memory store with an empty data directory (it reads the whole
  changelog), one on RocksDB with an empty data directory (a pod that lost its disk: a cold
  restore), and one on RocksDB keeping that directory (a pod restarted with its claim: it
  reads only the changelog's tail); each prints the time from start to Faust's "Ready" and
  to the end of its first catch-up, the catch-up's records and rate as its metrics report
  them, and its resident memory;
- two workers as deploy/ runs them (instance ids, RocksDB, deploy/'s session timeout),
  once each has finished its first catch-up: a rolling restart of both (their directories
  kept) while DRs of new calls flow at a steady rate: the longest push-to-event delay, and
  the changelog records each restarted worker read (a partition restored in full would be
  N / partitions of them), and the rebalances the other worker saw meanwhile;
- what a StatefulSet does when a pod's disk is lost: one of the two killed, its directory
  deleted, and started again at once with the same instance id (static membership: no
  rebalance) and an empty disk, so it restores its partitions in full: the time from the
  kill until its partitions emit again, the records it restored, and the rebalances the
  other worker saw.

Run: `make bench-recovery` (or `python -m bench.recovery --calls 1000000`); `--only cold`
(repeatable: memory, cold, kept, rolling, lost) runs some cases, `--profile PATH` samples
each restart with py-spy (installed separately) into PATH.<case>, collapsed stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.worker import PARTITIONS, T0, ZONE, Process, Stage
from connector import codec, dr, identity, normalize
from connector.identity import call_key, partition_of
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.merge import merge

FLOW_PER_SECOND = 50  # DRs of new calls while workers restart
WORKER_ENV: Final = Path(__file__).resolve().parents[1] / "deploy" / "base" / "worker.env"
# The states are stamped at T0, weeks ago: keep them past the expiry's horizon.
STATE_DAYS: Final = "36500"
CAUGHT_UP_SECONDS: Final = 3600.0


def deploy_session_seconds() -> int:
    """The worker's session timeout as deploy/ sets it."""
    for line in WORKER_ENV.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS":
            return int(value)
    raise RuntimeError(f"{WORKER_ENV}: no NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS")


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclasses.dataclass
class Worker:
    process: Process
    port: int
    started: float  # monotonic
    ready_after: float  # seconds from start to Faust's "Ready"


@dataclasses.dataclass(frozen=True)
class Scrape:
    values: dict[str, float]  # the unlabelled samples
    held: frozenset[int]  # source partitions with a lag gauge served


def scrape(port: int, topic: str) -> Scrape:
    values, held = {}, set()
    for line in metrics(port):
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "{" not in name:
            values[name] = float(value)
        elif name.startswith("nxcloud_worker_lag{") and f'topic="{topic}"' in name:
            held.add(int(name.split('partition="')[1].split('"')[0]))
    return Scrape(values, frozenset(held))


def start(
    stage: Stage,
    data: Path,
    store: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    profile: Path | None = None,
) -> Worker:
    """A worker, once Faust says it is ready: with `profile`, py-spy samples it until its
    first catch-up ended (collapsed stacks, every thread, into that file)."""
    port = free_port()
    environment = stage.env(
        NXCLOUD_WORKER_DATA_DIR=str(data), NXCLOUD_WORKER_STORE=store,
        NXCLOUD_WORKER_METRICS_PORT=str(port), NXCLOUD_WORKER_STATE_DAYS=STATE_DAYS,
        **(env or {}),
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
        process.await_line("[^Worker]: Ready", timeout=CAUGHT_UP_SECONDS)
        worker = Worker(process, port, started, time.monotonic() - started)
        if spy is not None:
            caught_up_now(stage, worker)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    return worker


def caught_up_now(stage: Stage, worker: Worker) -> tuple[Scrape, float]:
    """The worker's metrics once its first catch-up from the changelog ended (its
    recovery gauge set) and it serves the lag of its source partitions; seconds from its
    start until seen so."""
    deadline = time.monotonic() + CAUGHT_UP_SECONDS
    while time.monotonic() < deadline:
        worker.process.check_running()
        try:
            found = scrape(worker.port, stage.names.dr_raw)
        except OSError:  # not serving yet
            found = None
        if found and found.values.get("nxcloud_worker_recovery_seconds", 0) > 0 and found.held:
            return found, time.monotonic() - worker.started
        time.sleep(0.2)
    raise RuntimeError(f"{worker.process.log}: no catch-up ended within {CAUGHT_UP_SECONDS} s")


async def caught_up(stage: Stage, worker: Worker) -> tuple[Scrape, float]:
    return await asyncio.to_thread(caught_up_now, stage, worker)


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
    """Let a worker declare its changelog (at its first catch-up), then write `calls`
    states into it: seconds."""
    worker = start(stage, scratch / "fill", "memory://", scratch / "fill.log")
    try:
        await caught_up(stage, worker)
    finally:
        worker.process.stop()
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
    print(f"recovery: {calls:,} calls written to the call store's changelog in {took:.0f} s "
          f"({load()})", flush=True)  # fmt: skip
    for case, name, store, keep in RESTARTS:
        if case not in cases:
            continue
        data = scratch / "rocksdb"
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
        worker = start(
            stage, data, store, scratch / f"{case}.log",
            profile=profile.with_name(f"{profile.name}.{case}") if profile else None,
        )  # fmt: skip
        try:
            found, after = await caught_up(stage, worker)
            rss = worker.process.rss_mb()
        finally:
            worker.process.stop()
        values = found.values
        print(f"  {name:50} ready after {worker.ready_after:5.1f} s, caught up after "
              f"{after:5.1f} s (catch-up {values['nxcloud_worker_recovery_seconds']:5.1f} s, "
              f"{values['nxcloud_worker_restored_records_total']:9,.0f} records, "
              f"{values['nxcloud_worker_restore_records_per_second']:8,.0f} records/s), "
              f"RSS {rss:4.0f} MB, {megabytes(data):4.0f} MB on disk ({load()})",
              flush=True)  # fmt: skip
    if "rolling" in cases:
        await rolling_restart(stage, scratch, calls)
    if "lost" in cases:
        await lost_disk(stage, scratch, calls)


def megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


class Pair:
    """Two workers as deploy/ runs them: instance ids, RocksDB, deploy/'s session timeout;
    their directories under `scratch`."""

    def __init__(self, stage: Stage, scratch: Path) -> None:
        self.stage, self.scratch = stage, scratch
        self.session = deploy_session_seconds()
        self.workers: dict[str, Worker] = {}
        self.starts = 0
        scratch.mkdir(parents=True, exist_ok=True)

    async def start(self, name: str) -> Worker:
        self.starts += 1
        worker = await asyncio.to_thread(
            start, self.stage, self.scratch / name, "rocksdb://",
            self.scratch / f"{name}.{self.starts}.log",
            env={"NXCLOUD_WORKER_INSTANCE_ID": name,
                 "NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS": str(self.session)},
        )  # fmt: skip
        self.workers[name] = worker
        return worker

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.process.stop()

    async def settled(self) -> dict[str, frozenset[int]]:
        """Until each worker has finished its first catch-up and together they hold every
        partition, each its own: each one's partitions."""
        deadline = time.monotonic() + CAUGHT_UP_SECONDS
        while time.monotonic() < deadline:
            held = {name: (await caught_up(self.stage, worker))[0].held
                    for name, worker in self.workers.items()}  # fmt: skip
            together = [p for partitions in held.values() for p in partitions]
            if sorted(together) == list(range(PARTITIONS)):
                return held
            await asyncio.sleep(0.5)
        raise RuntimeError("the workers did not share the partitions in time")


class Flow:
    """DRs of new calls at a steady rate, and when each one's call event appeared."""

    def __init__(self, stage: Stage, name: str) -> None:
        self.stage, self.prefix = stage, f"{name}-"  # new calls: no case repeats another's
        self.sent: dict[str, tuple[float, int]] = {}  # message id: (sent at, partition)
        self.emitted: dict[str, float] = {}
        self.done = asyncio.Event()
        self.listening = asyncio.Event()

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
        topic = self.stage.names.call_events
        consumer = AIOKafkaConsumer(**self.stage.kafka(enable_auto_commit=False))
        async with consumer:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)
            self.listening.set()
            while not (self.done.is_set() and set(self.sent) <= set(self.emitted)):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        event = orjson.loads(record.value or b"{}")
                        message_id = event.get("message_id", "")
                        if message_id.startswith(self.prefix):
                            self.emitted.setdefault(message_id, record.timestamp / 1000)

    def delays(self, partitions: frozenset[int] | None = None,
               after: float = 0.0) -> dict[str, float]:  # fmt: skip
        return {
            message_id: self.emitted[message_id] - sent_at
            for message_id, (sent_at, partition) in self.sent.items()
            if message_id in self.emitted
            and sent_at > after
            and (partitions is None or partition in partitions)
        }


async def flowing(flow: Flow) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    consuming = asyncio.create_task(flow.consume())
    listening = asyncio.create_task(flow.listening.wait())
    await asyncio.wait([consuming, listening], return_when=asyncio.FIRST_COMPLETED)
    if consuming.done():
        listening.cancel()
        consuming.result()
    return asyncio.create_task(flow.produce()), consuming


async def finish(flow: Flow, tasks: tuple[asyncio.Task[None], asyncio.Task[None]]) -> None:
    flow.done.set()
    await tasks[0]
    await asyncio.wait_for(tasks[1], timeout=600)


async def rolling_restart(stage: Stage, scratch: Path, calls: int) -> None:
    """Both workers restarted in turn with their ids and directories while DRs flow, each
    once the other had finished its catch-up."""
    pair = Pair(stage, scratch / "rolling")
    await asyncio.gather(pair.start("worker-0"), pair.start("worker-1"))
    await pair.settled()
    flow = Flow(stage, "rolling")
    tasks = await flowing(flow)
    restored = []
    try:
        await asyncio.sleep(5)
        for name, other in (("worker-0", "worker-1"), ("worker-1", "worker-0")):
            before = rebalances(stage, pair.workers[other])
            stopping = time.monotonic()
            await asyncio.to_thread(pair.workers[name].process.stop)
            stopped = time.monotonic() - stopping
            found, after = await caught_up(stage, await pair.start(name))
            moved = rebalances(stage, pair.workers[other]) - before
            restored.append(
                (found.values["nxcloud_worker_restored_records_total"], after, stopped, moved)
            )
            await asyncio.sleep(5)
        await pair.settled()
        await finish(flow, tasks)
    finally:
        pair.stop()
    delays = flow.delays()
    print(f"  rolling restart of 2 workers (session timeout {pair.session} s), "
          f"{FLOW_PER_SECOND} DRs/s, {len(delays)} DRs: longest push-to-event delay "
          f"{max(delays.values()):5.1f} s (median {statistics.median(delays.values()):.2f} s); "
          f"changelog records read by the restarted workers {restored[0][0]:,.0f} and "
          f"{restored[1][0]:,.0f} (a whole partition: {calls // PARTITIONS:,}); each stopped "
          f"in {restored[0][2]:.1f} and {restored[1][2]:.1f} s and caught up {restored[0][1]:.1f} "
          f"and {restored[1][1]:.1f} s after its start, the other worker meanwhile "
          f"{restored[0][3]:.0f} and {restored[1][3]:.0f} rebalances ({load()})",
          flush=True)  # fmt: skip


async def lost_disk(stage: Stage, scratch: Path, calls: int) -> None:
    """One of two workers killed, its directory deleted, and started again at once with
    the same instance id and an empty disk, as a StatefulSet does when a claim is lost."""
    pair = Pair(stage, scratch / "lost")
    await asyncio.gather(pair.start("worker-0"), pair.start("worker-1"))
    held = (await pair.settled())["worker-0"]
    flow = Flow(stage, "lost")
    tasks = await flowing(flow)
    try:
        await asyncio.sleep(5)
        other = rebalances(stage, pair.workers["worker-1"])
        pair.workers["worker-0"].process.popen.kill()
        pair.workers["worker-0"].process.popen.wait()
        killed = time.time()
        shutil.rmtree(scratch / "lost" / "worker-0")
        restarted = await pair.start("worker-0")
        found, after = await caught_up(stage, restarted)
        back = await emitting(flow, held, killed)
        await asyncio.sleep(5)
        holds = (await pair.settled())["worker-0"]
        other = rebalances(stage, pair.workers["worker-1"]) - other
        await finish(flow, tasks)
    finally:
        pair.stop()
    values = found.values
    delays = flow.delays(held, killed)
    print(f"  a worker killed, its disk lost, started again with its instance id "
          f"(session timeout {pair.session} s), {FLOW_PER_SECOND} DRs/s: its partitions "
          f"{sorted(held)} emit again {back - killed:5.1f} s after the kill (ready "
          f"{restarted.ready_after:.1f} s, caught up {after:.1f} s after its start); it "
          f"restored {values['nxcloud_worker_restored_records_total']:,.0f} records in "
          f"{values['nxcloud_worker_recovery_seconds']:.1f} s "
          f"({values['nxcloud_worker_restore_records_per_second']:,.0f} records/s) and holds "
          f"{sorted(holds)}, the other worker {other:.0f} rebalances meanwhile; longest "
          f"push-to-event delay on them {max(delays.values()):.1f} s ({load()})",
          flush=True)  # fmt: skip


def rebalances(stage: Stage, worker: Worker) -> float:
    return scrape(worker.port, stage.names.dr_raw).values["nxcloud_worker_rebalances_total"]


async def emitting(flow: Flow, partitions: frozenset[int], since: float) -> float:
    """When the first event of a DR on `partitions` sent after `since` appeared."""
    deadline = time.monotonic() + CAUGHT_UP_SECONDS
    while time.monotonic() < deadline:
        seen = [flow.emitted[m] for m, (sent, partition) in list(flow.sent.items())
                if sent > since and partition in partitions and m in flow.emitted]  # fmt: skip
        if seen:
            return min(seen)
        await asyncio.sleep(0.2)
    raise RuntimeError("the lost worker's partitions did not emit again in time")


def metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines: list[str] = answer.read().decode().splitlines()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--only", choices=CASES, action="append", help="a case (repeatable)")
    parser.add_argument("--profile", type=Path, help="py-spy each restart until caught up: "
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
