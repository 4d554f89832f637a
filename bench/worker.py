"""Worker benchmark: the worker against a no-op Faust agent and an aiokafka passthrough,
DR push to call event latency by rate and where it goes, the metrics' cost, memory.

One run prints: records/s and records per CPU second of one worker (normalize + merge +
dedupe) over records already on the raw topics, of a Faust agent that does nothing but
pass each record on, built like the worker (`bench/noop_agent.py`), and of a plain aiokafka
consume-and-produce passthrough, in turns over the same records, with the ratios; the delay
from a DR push through the real receiver to its call event at several push rates, split
into the receiver's answer, the raw record's write and the worker (Kafka's record
timestamps); the worker without and with its metrics; and its resident memory as calls
accumulate on rocksdict. The worker runs as `python -m connector worker`, as deployed.
Run: `make bench-worker` (or `python -m bench.worker`; `--only` one part).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench import noop_agent
from bench.receiver import load
from connector import admin, cdr, clients, dr, identity
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings
from connector.topics import TopicNames, declare

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PARTITIONS = 6


@dataclass(frozen=True)
class Stage:
    """One isolated set of topics on the shared broker."""

    bootstrap: str
    suffix: str

    @property
    def names(self) -> TopicNames:
        return TopicNames().with_suffix(self.suffix)

    @property
    def group(self) -> str:
        return f"nxcloud-worker.{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "NXCLOUD_TOPIC_SUFFIX": self.suffix,
            "NXCLOUD_TOPIC_PARTITIONS": str(PARTITIONS),
            **extra,
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def kafka(self, **extra: Any) -> dict[str, Any]:
        """A client's options, from the settings as every client takes them."""
        return clients.options(self.settings, **extra)

    async def create(self) -> None:
        await admin.converge(self.settings, declare(self.settings, self.names))


def mixed_records(calls: int) -> Iterator[tuple[str, bytes, bytes]]:
    """Per call: a provisional CDR row, the settled row, the DR, and the DR again."""
    world = sandbox.World(seed=7, origin=T0, rate=50.0)
    made, message = 0, 0
    while made < calls:
        for call in world.calls(message):
            service = 0 if call.service == "group_call" else 1
            window = cdr.Window(service, T0, T0 + timedelta(hours=1))
            fields = call.dr_fields(ZONE)
            key = identity.dr_key(fields)
            for settled in (False, True):
                fetched = call.ended_at + timedelta(minutes=30 if settled else 5)
                row = call.cdr_row(ZONE, settled)
                yield "cdr", key, cdr.raw_record(row, window, 1, fetched, "bench")
            arrival = dr.Arrival(f"{made:032x}", call.ended_at, "127.0.0.1", "b", "POST", "")
            record = dr.raw_record(fields, arrival)
            yield "dr", key, record
            yield "dr", key, record
            made += 1
        message += 1


def one_dr_per_call(calls: int) -> Iterator[tuple[str, bytes, bytes]]:
    template = next(call for call in sandbox.World(seed=7, origin=T0, rate=50.0).calls(0))
    fields = template.dr_fields(ZONE)
    for number in range(calls):
        fields["messageid"] = f"bench-{number}"
        arrival = dr.Arrival(f"{number:032x}", T0, "127.0.0.1", "b", "POST", "")
        yield "dr", identity.dr_key(fields), dr.raw_record(fields, arrival)


async def produce(stage: Stage, records: Iterator[tuple[str, bytes, bytes]]) -> int:
    topics = {"dr": stage.names.dr_raw, "cdr": stage.names.cdr_raw}
    producer = AIOKafkaProducer(**stage.kafka(
        acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=256 * 1024,
    ))  # fmt: skip
    sent = 0
    async with producer:
        pending = []
        for source, key, value in records:
            pending.append(await producer.send(topics[source], value=value, key=key))
            sent += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    return sent


async def create_topic(stage: Stage, name: str) -> None:
    client = AIOKafkaAdminClient(**stage.kafka())
    await client.start()
    try:
        await client.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await client.close()


@dataclass(frozen=True)
class Rate:
    """Records through one consumer: seconds from its first output to its last, and the CPU
    seconds its process used meanwhile."""

    records: int
    seconds: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.records / self.cpu


async def passthrough(stage: Stage, expected: int, output: str) -> Rate:
    """A plain consume-and-produce loop over the raw topics (in this process), from its
    first fetch to its last acknowledgement."""
    names = stage.names
    consumer = AIOKafkaConsumer(
        names.dr_raw, names.cdr_raw, **stage.kafka(
            group_id=f"bench-passthrough.{stage.suffix}", auto_offset_reset="earliest",
            enable_auto_commit=False,
        ),
    )  # fmt: skip
    producer = AIOKafkaProducer(**stage.kafka(acks="all", enable_idempotence=True, linger_ms=5))
    done, started, cpu = 0, 0.0, 0.0
    async with consumer, producer:
        while done < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if batches and not started:
                started, cpu = time.monotonic(), time.process_time()
            futures = [
                await producer.send(output, value=record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        return Rate(expected, time.monotonic() - started, time.process_time() - cpu)


async def committed_and_end(
    stage: Stage, topics: list[str], group: str | None = None
) -> tuple[int, int]:
    client = AIOKafkaAdminClient(**stage.kafka())
    consumer = AIOKafkaConsumer(**stage.kafka())
    await client.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        try:
            offsets = await client.list_consumer_group_offsets(group or stage.group)
        except KafkaError:
            offsets = {}
        ends = await consumer.end_offsets(partitions)
        committed = sum(offsets[tp].offset for tp in partitions if tp in offsets)
        return committed, sum(ends.values())
    finally:
        await consumer.stop()
        await client.close()


async def event_span(stage: Stage, topic: str | None = None) -> tuple[int, float, float]:
    """How many records `topic` (the call events) has, and the Kafka timestamps (s) of the
    first and the last one."""
    consumer = AIOKafkaConsumer(**stage.kafka(enable_auto_commit=False))
    async with consumer:
        partitions = [
            TopicPartition(topic or stage.names.call_events, p) for p in range(PARTITIONS)
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        stamps: list[int] = []
        for tp in partitions:
            for offset in {0, ends[tp] - 1} if ends[tp] else set():
                consumer.seek(tp, offset)
                record = await consumer.getone(tp)
                stamps.append(record.timestamp)
    return sum(ends.values()), min(stamps) / 1000, max(stamps) / 1000


class Process:
    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, module: str = "connector"
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", module, *command],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def await_line(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{self.log}: no {text!r}:\n{self.log.read_text()[-3000:]}")

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log}: exited:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used (every thread)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


READY = "[^Worker]: Ready"  # Faust's worker, once started


def worker(stage: Stage, scratch: Path, name: str, **env: str) -> Process:
    env.setdefault("NXCLOUD_WORKER_METRICS_PORT", str(free_port()))
    environment = stage.env(NXCLOUD_WORKER_DATA_DIR=str(scratch / name), **env)
    process = Process(["worker"], environment, scratch / f"{name}.log")
    process.await_line(READY)
    return process


def noop(stage: Stage, scratch: Path, name: str, output: str) -> Process:
    """The no-op Faust agent (`bench/noop_agent.py`), writing to `output`."""
    environment = stage.env(NXCLOUD_WORKER_DATA_DIR=str(scratch / name), BENCH_NOOP_OUTPUT=output)
    process = Process([], environment, scratch / f"{name}.log", module="bench.noop_agent")
    process.await_line(READY)
    return process


def sources(stage: Stage) -> list[str]:
    return [stage.names.dr_raw, stage.names.cdr_raw, stage.names.observations]


async def await_drained(
    stage: Stage, process: Process, deadline: float, group: str | None = None
) -> None:
    while time.monotonic() < deadline:
        process.check_running()
        committed, end = await committed_and_end(stage, sources(stage), group)
        if committed == end:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{process.log}: did not catch up in time")


async def sample_cpu(process: Process, samples: list[tuple[float, float]]) -> None:
    """The process's CPU seconds at each moment (time.time()), every 50 ms, until cancelled."""
    while True:
        samples.append((time.time(), process.cpu_seconds()))
        await asyncio.sleep(0.05)


def cpu_at(samples: list[tuple[float, float]], moment: float) -> float:
    """The CPU seconds used by `moment`, between the samples taken around it."""
    for (before, used), (after, then) in itertools.pairwise(samples):
        if before <= moment <= after:
            return used + (then - used) * (moment - before) / (after - before)
    return samples[0][1] if moment < samples[0][0] else samples[-1][1]


async def drain(stage: Stage, process: Process, records: int, group: str, output: str) -> Rate:
    """`records` through a started `process` (its group and output topic), from its first
    output record to its last (their Kafka timestamps): the seconds, and the CPU the process
    used meanwhile (so its start and its wait for the last commit do not count)."""
    samples: list[tuple[float, float]] = []
    sampling = asyncio.create_task(sample_cpu(process, samples))
    try:
        await await_drained(stage, process, time.monotonic() + 600, group)
    finally:
        sampling.cancel()
        process.stop()
    _, first, last = await event_span(stage, output)
    return Rate(records, last - first, cpu_at(samples, last) - cpu_at(samples, first))


WORKER, NOOP, PASSTHROUGH = "worker", "no-op Faust agent", "aiokafka passthrough"
KINDS = (WORKER, NOOP, PASSTHROUGH)
SHORT = {WORKER: "worker", NOOP: "no-op", PASSTHROUGH: "passthrough"}


async def through(kind: str, stage: Stage, scratch: Path, records: int, **env: str) -> Rate:
    """What is on `stage`'s raw topics through one worker, the no-op agent or the
    passthrough, each with a consumer group and an output topic of its own."""
    name = f"{stage.suffix}-{SHORT[kind]}"
    if kind == WORKER:
        process = worker(stage, scratch, name, **env)
        return await drain(stage, process, records, stage.group, stage.names.call_events)
    output = f"bench.{SHORT[kind]}.{stage.suffix}"
    await create_topic(stage, output)
    if kind == NOOP:
        process = noop(stage, scratch, name, output)
        return await drain(stage, process, records, noop_agent.group(stage.settings), output)
    return await passthrough(stage, records, output)


@dataclass
class Throughput:
    calls: int
    records: int
    rates: dict[str, list[Rate]] = field(default_factory=dict)

    def ratios(self, kind: str, measure: Callable[[Rate], float]) -> list[float]:
        """The worker's figure over `kind`'s, round by round."""
        pairs = zip(self.rates[WORKER], self.rates[kind], strict=True)
        return [measure(mine) / measure(theirs) for mine, theirs in pairs]


async def compare(
    bootstrap: str, scratch: Path, calls: int, rounds: int, kinds: Sequence[str] = KINDS
) -> Throughput:
    """`kinds` in turns, round after round, each round over records of its own (the same
    records each round) that every kind of the round reads."""
    result = Throughput(calls, 0, {kind: [] for kind in kinds})
    for number in range(rounds):
        stage = Stage(bootstrap, f"throughput{number}")
        await stage.create()
        result.records = await produce(stage, mixed_records(calls))
        for kind in kinds:
            result.rates[kind].append(await through(kind, stage, scratch, result.records))
    return result


def runs(values: Sequence[float], form: str = ",.0f") -> str:
    median = format(statistics.median(values), form)
    return (
        median if len(values) == 1 else f"{median} ({' / '.join(format(v, form) for v in values)})"
    )


def print_throughput(result: Throughput, started: str) -> None:
    kinds = list(result.rates)
    rounds = len(result.rates[kinds[0]])
    print(f"throughput: {result.records:,} raw records ({result.calls:,} calls: CDR, settled CDR,"
          f" DR, DR again), {rounds} round(s) of {', '.join(kinds)} in turns ({started} at the"
          " start)")  # fmt: skip
    print(f"  {'':24} {'records/s, median (runs)':34} records per CPU second, median (runs)")
    for kind, rates in result.rates.items():
        wall = runs([rate.per_second for rate in rates])
        cpu = runs([rate.per_cpu_second for rate in rates])
        print(f"  {kind:24} {wall:34} {cpu}")
    for kind in kinds[1:]:
        wall = runs(result.ratios(kind, lambda rate: rate.per_second), ".0%")
        cpu = runs(result.ratios(kind, lambda rate: rate.per_cpu_second), ".0%")
        print(f"  {'worker / ' + SHORT[kind]:24} {wall:34} {cpu}")
    print(f"  ({load()} at the end; ratios: the median of the rounds' own)", flush=True)


async def throughput(bootstrap: str, scratch: Path, calls: int, rounds: int) -> Throughput:
    started = load()
    result = await compare(bootstrap, scratch, calls, rounds)
    print_throughput(result, started)
    return result


async def metrics_cost(bootstrap: str, scratch: Path, calls: int, rounds: int) -> None:
    """The worker without its metrics (NXCLOUD_WORKER_METRICS_PORT=0) and with them, in
    turns (ABBA: the machine's load drifts), over the same records on stages of their own."""
    rates: dict[bool, list[Rate]] = {False: [], True: []}
    started = load()
    for turn in range(rounds * 2):
        metered = turn % 4 in (1, 2)
        stage = Stage(bootstrap, f"metrics{turn}")
        await stage.create()
        records = await produce(stage, mixed_records(calls))
        port = str(free_port()) if metered else "0"
        rate = await through(WORKER, stage, scratch, records, NXCLOUD_WORKER_METRICS_PORT=port)
        rates[metered].append(rate)
    bare, metered_ = rates[False], rates[True]
    print(f"metrics: the worker without and with its metrics served, ABBA x {rounds},"
          f" {calls:,} calls ({started} at the start)")  # fmt: skip
    for label, values in (("without", bare), ("with", metered_)):
        print(f"  {label:8} {runs([r.per_second for r in values])} records/s,"
              f" {runs([r.per_cpu_second for r in values])} records per CPU second")  # fmt: skip
    cost = 1 - statistics.median(r.per_cpu_second for r in metered_) / statistics.median(
        r.per_cpu_second for r in bare
    )
    print(f"  metrics cost: {cost:.1%} of the CPU throughput ({load()} at the end)", flush=True)


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Seen:
    """One push as the bench saw it: when it was sent and answered (time.time()), its raw
    record's and its call event's Kafka timestamps (CreateTime, ms), when the event was read."""

    sent: float
    answered: float = 0.0
    raw_ms: int = 0
    event_ms: int = 0
    read: float = 0.0


async def push_lane(
    port: int, schedule: list[tuple[float, str, bytes]], seen: dict[str, Seen]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for at, message_id, request in schedule:
        await asyncio.sleep(max(0.0, at - time.time()))
        seen[message_id] = push = Seen(time.time())
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )  # fmt: skip
        answer = await reader.readexactly(length)
        push.answered = time.time()
        if answer != b"success":
            raise RuntimeError(f"push refused: {answer!r}")
    writer.close()


STEPS: dict[str, Callable[[Seen], float]] = {
    "push -> call event read": lambda s: (s.read - s.sent) * 1000,
    "  receiver's answer (HTTP)": lambda s: (s.answered - s.sent) * 1000,
    "  push -> raw record stamped": lambda s: s.raw_ms - s.sent * 1000,
    "  raw record -> call event stamped": lambda s: s.event_ms - s.raw_ms,
    "  call event stamped -> read": lambda s: s.read * 1000 - s.event_ms,
}


@dataclass(frozen=True)
class Delays:
    rate: int
    seconds: int
    pushes: int
    achieved: float
    events: int
    steps: dict[str, list[float]]  # ms, sorted
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU per push, by process

    def percentile(self, step: str, fraction: float) -> float:
        values = self.steps[step]
        return values[min(len(values) - 1, int(len(values) * fraction))]


async def listen(
    stage: Stage, consumer: AIOKafkaConsumer, seen: dict[str, Seen], total: int, until: float
) -> None:
    """The raw DR records and call events of the `total` pushes in `seen` (filled as they are
    sent), until each has its event."""
    raw, events = stage.names.dr_raw, stage.names.call_events
    read = 0
    while read < total and time.time() < until:
        batches = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for tp, records in batches.items():
            for record in records:
                if tp.topic == raw:
                    push = seen.get(orjson.loads(record.value)["fields"]["messageid"])
                    if push is not None:
                        push.raw_ms = record.timestamp
                elif tp.topic == events:
                    push = seen.get(orjson.loads(record.value)["message_id"])
                    if push is not None and not push.read:
                        push.event_ms, push.read = record.timestamp, now
                        read += 1


RUNS = itertools.count()  # each paced run's message ids are its own: the worker dedupes


async def paced(
    stage: Stage, port: int, consumer: AIOKafkaConsumer, rate: int, seconds: int
) -> Delays:
    template = next(iter(sandbox.World(seed=7, origin=T0, rate=50.0).calls(0))).dr_fields(ZONE)
    lanes = max(16, rate // 20)  # each lane waits for an answer: 50 ms of slack a push
    schedules: list[list[tuple[float, str, bytes]]] = [[] for _ in range(lanes)]
    total = rate * seconds
    start, run = time.time() + 1.0, next(RUNS)
    for number in range(total):
        message_id = f"latency-{run}-{number}"
        body = urlencode({**template, "messageid": message_id}).encode()
        item = (start + number / rate, message_id, http_request("/nxcloud/voice/dr", body))
        schedules[number % lanes].append(item)
    seen: dict[str, Seen] = {}
    pushing = asyncio.gather(*(push_lane(port, s, seen) for s in schedules))
    await listen(stage, consumer, seen, total, start + seconds + 60)
    await pushing
    sent = [push.sent for push in seen.values()]
    done = [push for push in seen.values() if push.read and push.raw_ms]
    steps = {step: sorted(measure(push) for push in done) for step, measure in STEPS.items()}
    return Delays(rate, seconds, total, total / (max(sent) - min(sent)), len(done), steps)


def print_delays(delays: Delays, started: str) -> None:
    print(f"latency at {delays.rate:,} DR/s for {delays.seconds} s: {delays.pushes:,} pushes,"
          f" {delays.achieved:,.0f}/s achieved, {delays.events:,} call events read ({started}"
          " at the start)")  # fmt: skip
    print(f"  {'':36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for step, values in delays.steps.items():
        if values:
            p50, p99 = delays.percentile(step, 0.5), delays.percentile(step, 0.99)
            print(f"  {step:36} {p50:8,.0f} {p99:8,.0f} {values[-1]:8,.0f}")
    if delays.cpu_us:
        used = ", ".join(f"{name} {us:,.0f} µs" for name, us in delays.cpu_us.items())
        print(f"  CPU per push over the run: {used}")
    print(f"  ({load()} at the end)", flush=True)


async def latency(
    bootstrap: str, scratch: Path, rates: Sequence[int], seconds: int
) -> list[Delays]:
    """DR pushes through the real receiver to one worker, rate after rate; where the delay
    goes, from Kafka's record timestamps (the receiver's and the worker's producers set them)."""
    stage = Stage(bootstrap, "latency")
    await stage.create()
    port = free_port()
    receiver = Process(
        ["receiver"],
        stage.env(
            NXCLOUD_RECEIVER_PORT=str(port),
            NXCLOUD_SPOOL_DIR=str(scratch / "spool"),
            NXCLOUD_RECEIVER_MANAGEMENT_PORT=str(free_port()),
        ),  # not the default 9101
        scratch / "receiver.log",
    )
    process = worker(stage, scratch, "latency")
    consumer = AIOKafkaConsumer(**stage.kafka(enable_auto_commit=False))
    results = []
    try:
        receiver.await_line("Application startup complete")
        async with consumer:
            topics = (stage.names.dr_raw, stage.names.call_events)
            consumer.assign([TopicPartition(t, p) for t in topics for p in range(PARTITIONS)])
            await consumer.seek_to_end()
            # Faust says "Ready" before the worker has its partitions: wait until pushes
            # come through, so the first rate does not start behind.
            warming = time.monotonic()
            warm = await paced(stage, port, consumer, 50, 1)
            print(f"latency: {warm.events} of 50 warm-up pushes through in"
                  f" {time.monotonic() - warming:.1f} s after the worker's Ready")  # fmt: skip
            for rate in rates:
                started = load()
                before = (receiver.cpu_seconds(), process.cpu_seconds(), time.process_time())
                delays = await paced(stage, port, consumer, rate, seconds)
                after = (receiver.cpu_seconds(), process.cpu_seconds(), time.process_time())
                used = zip(("receiver", "worker", "this benchmark"), before, after, strict=True)
                cpu_us = {name: (end - start) / delays.pushes * 1e6 for name, start, end in used}
                results.append(replace(delays, cpu_us=cpu_us))
                print_delays(results[-1], started)
                process.check_running()
    finally:
        process.stop()
        receiver.stop()
    return results


async def memory(bootstrap: str, scratch: Path, calls: int) -> None:
    stage = Stage(bootstrap, "memory")
    await stage.create()
    process = worker(stage, scratch, "memory", NXCLOUD_WORKER_STORE="rocksdb://")
    samples: list[tuple[int, float]] = []
    producing = threading.Thread(
        target=lambda: asyncio.run(produce(stage, one_dr_per_call(calls))), daemon=True
    )
    producing.start()
    started, step = time.monotonic(), calls // 10
    try:
        while not samples or samples[-1][0] < calls:
            process.check_running()
            merged, _ = await committed_and_end(stage, [stage.names.dr_raw])
            if merged >= len(samples) * step + step or merged >= calls:
                samples.append((merged, process.rss_mb()))
            if time.monotonic() - started > 3600:
                raise RuntimeError("the memory run took over an hour")
            await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
    finally:
        process.stop()
    print(f"memory: {calls:,} calls into state on rocksdict (one DR each), one worker")
    for merged, rss in samples:
        print(f"  {merged:>10,} calls in state   RSS {rss:6.0f} MB")
    print(f"  peak RSS: {max(rss for _, rss in samples):,.0f} MB; {calls / elapsed:,.0f} calls/s")


@contextmanager
def broker() -> Iterator[tuple[str, Path]]:
    """A local broker of its own and a scratch folder: its bootstrap servers and the folder."""
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        config = BrokerConfig(scratch / "kafka", free_port(), free_port(), heap="1g")
        with LocalKafka(config) as kafka:
            yield kafka.bootstrap_servers, scratch


PARTS = ("throughput", "latency", "metrics", "memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=25_000, help="calls in the throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs of each kind")
    parser.add_argument(
        "--rates", type=lambda text: [int(rate) for rate in text.split(",")],
        default=[100, 300, 600, 1000], help="DR pushes/s in the latency run, e.g. 100,1000",
    )  # fmt: skip
    parser.add_argument("--seconds", type=int, default=30, help="seconds of each latency rate")
    parser.add_argument("--state", type=int, default=1_000_000, help="calls in the memory run")
    parser.add_argument("--only", choices=PARTS, action="append", help="run just these parts")
    args = parser.parse_args()
    with broker() as (bootstrap, scratch):
        parts: dict[str, Callable[[], Any]] = {
            "throughput": lambda: throughput(bootstrap, scratch, args.calls, args.rounds),
            "latency": lambda: latency(bootstrap, scratch, args.rates, args.seconds),
            "metrics": lambda: metrics_cost(bootstrap, scratch, args.calls, args.rounds),
            "memory": lambda: memory(bootstrap, scratch, args.state),
        }
        for name, run in parts.items():
            if args.only is None or name in args.only:
                asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
