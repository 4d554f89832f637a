"""Worker benchmark: throughput against a plain aiokafka passthrough, latency, memory.

One run prints: records/s through normalize + merge + dedupe for one worker over records
already on the raw topics; the same records through a plain aiokafka consume-and-produce
passthrough (the ceiling); DR push to call event latency at a fixed push rate, through
the real receiver; and the worker's resident memory as calls accumulate on rocksdict.
Run: `make bench-worker` (or `python -m bench.worker`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.types import TP, EventT

from connector import admin, cdr, clients, dr, identity
from connector.local import sandbox
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings
from connector.topics import TopicNames, declare
from connector.worker.agents import BATCH
from connector.worker.telemetry import Monitor, WorkerMetrics

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


async def passthrough(stage: Stage, expected: int) -> float:
    """A plain consume-and-produce loop over the raw topics: records per second."""
    names = stage.names
    consumer = AIOKafkaConsumer(
        names.dr_raw, names.cdr_raw, **stage.kafka(
            group_id=f"bench-passthrough.{stage.suffix}", auto_offset_reset="earliest",
            enable_auto_commit=False,
        ),
    )  # fmt: skip
    producer = AIOKafkaProducer(**stage.kafka(acks="all", enable_idempotence=True, linger_ms=5))
    done, started = 0, 0.0
    async with consumer, producer:
        while done < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if batches and not started:
                started = time.monotonic()
            futures = [
                await producer.send(names.call_events, value=record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
    return expected / (time.monotonic() - started)


async def committed_and_end(stage: Stage, topics: list[str]) -> tuple[int, int]:
    client = AIOKafkaAdminClient(**stage.kafka())
    consumer = AIOKafkaConsumer(**stage.kafka())
    await client.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        try:
            offsets = await client.list_consumer_group_offsets(stage.group)
        except KafkaError:
            offsets = {}
        ends = await consumer.end_offsets(partitions)
        committed = sum(offsets[tp].offset for tp in partitions if tp in offsets)
        return committed, sum(ends.values())
    finally:
        await consumer.stop()
        await client.close()


async def event_span(stage: Stage) -> tuple[int, float]:
    """How many call events there are, and seconds from the first to the last one."""
    consumer = AIOKafkaConsumer(**stage.kafka(enable_auto_commit=False))
    async with consumer:
        partitions = [TopicPartition(stage.names.call_events, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        stamps: list[int] = []
        for tp in partitions:
            for offset in {0, ends[tp] - 1} if ends[tp] else set():
                consumer.seek(tp, offset)
                record = await consumer.getone(tp)
                stamps.append(record.timestamp)
    return sum(ends.values()), (max(stamps) - min(stamps)) / 1000


class Process:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "connector", *command],
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


def worker(stage: Stage, scratch: Path, name: str, **env: str) -> Process:
    env.setdefault("NXCLOUD_WORKER_METRICS_PORT", str(free_port()))
    environment = stage.env(NXCLOUD_WORKER_DATA_DIR=str(scratch / name), **env)
    process = Process(["worker"], environment, scratch / f"{name}.log")
    process.await_line("[^Worker]: Ready")
    return process


async def await_drained(stage: Stage, process: Process, deadline: float) -> None:
    names = stage.names
    topics = [names.dr_raw, names.cdr_raw, names.observations]
    while time.monotonic() < deadline:
        process.check_running()
        committed, end = await committed_and_end(stage, topics)
        if committed == end:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the worker did not catch up in time")


async def worker_rate(
    stage: Stage, scratch: Path, name: str, **env: str
) -> tuple[float, float, int]:
    """Seconds from the first event to the last of one worker over what is on `stage`'s raw
    topics, the CPU seconds it used meanwhile (from ready to caught up), and the events."""
    process = worker(stage, scratch, name, **env)
    try:
        cpu = process.cpu_seconds()
        await await_drained(stage, process, time.monotonic() + 600)
        cpu = process.cpu_seconds() - cpu
    finally:
        process.stop()
    events, seconds = await event_span(stage)
    return seconds, cpu, events


def metrics_code_us() -> float:
    """CPU microseconds per record of what the metrics add to the worker's path: the counting
    after each batch, and the no-op hooks Faust calls on one more sensor for each record."""
    metrics = WorkerMetrics()
    sensor = Monitor(metrics)
    tp = TP("nxcloud.voice.dr.raw", 0)
    records = cast(
        list[EventT[bytes]],
        [SimpleNamespace(message=SimpleNamespace(topic=tp.topic, tp=tp, offset=n, timestamp=1.0))
         for n in range(BATCH)],
    )  # fmt: skip
    rounds, none = 200, cast(Any, None)
    started = time.process_time()
    for _ in range(rounds):
        metrics.batch(records, BATCH // 2, BATCH, time.perf_counter())
        for n, record in enumerate(records):
            sensor.on_message_in(tp, n, record.message)
            state = sensor.on_stream_event_in(tp, n, none, record)
            sensor.on_stream_event_out(tp, n, none, record, state)
            sensor.on_message_out(tp, n, record.message)
            sensor.on_table_get(none, None)
            sensor.on_table_set(none, None, None)
            sensor.on_send_initiated(none, "", none, 0, 0)
            sensor.on_send_completed(none, none, none)
    return (time.process_time() - started) / (rounds * BATCH) * 1e6


async def throughput(bootstrap: str, scratch: Path, calls: int, rounds: int) -> None:
    """The worker without and with its metrics, in turns (ABBA: the machine's load drifts),
    over the same records on stages of their own."""
    ceiling_stage = Stage(bootstrap, "ceiling")
    await ceiling_stage.create()
    records = await produce(ceiling_stage, mixed_records(calls))
    rate_ceiling = await passthrough(ceiling_stage, records)
    rates: dict[bool, list[float]] = {False: [], True: []}
    per_cpu: dict[bool, list[float]] = {False: [], True: []}
    events = 0
    for turn in range(rounds * 2):
        metered = turn % 4 in (1, 2)
        stage = Stage(bootstrap, f"throughput{turn}")
        await stage.create()
        await produce(stage, mixed_records(calls))
        port = str(free_port()) if metered else "0"
        seconds, cpu, events = await worker_rate(
            stage, scratch, f"throughput{turn}", NXCLOUD_WORKER_METRICS_PORT=port
        )
        rates[metered].append(records / seconds)
        per_cpu[metered].append(records / cpu)
    bare, metered_rate = statistics.median(rates[False]), statistics.median(rates[True])
    bare_cpu, metered_cpu = statistics.median(per_cpu[False]), statistics.median(per_cpu[True])

    def runs(values: list[float]) -> str:
        return " / ".join(f"{value:,.0f}" for value in values)

    print(f"throughput: {records:,} raw records ({calls:,} calls: CDR, settled CDR, DR, DR again)")
    print(f"  worker, normalize + merge + dedupe: {bare:,.0f} records/s, median of "
          f"{runs(rates[False])} ({events:,} events)")  # fmt: skip
    print(f"  the same with its metrics served:   {metered_rate:,.0f} records/s, median of "
          f"{runs(rates[True])}")  # fmt: skip
    print(f"  records per CPU second, without:    {bare_cpu:,.0f} ({runs(per_cpu[False])})")
    print(f"  records per CPU second, with:       {metered_cpu:,.0f} ({runs(per_cpu[True])})")
    print(f"  metrics cost:                       {1 - metered_cpu / bare_cpu:.1%} of the CPU "
          f"throughput ({1 - metered_rate / bare:.1%} of the wall-clock one)")  # fmt: skip
    code = metrics_code_us()
    print(f"  the metrics' own code:              {code:.1f} us a record, "
          f"{code * bare_cpu / 1e6:.1%} of the worker's CPU a record")  # fmt: skip
    print(f"  aiokafka passthrough (ceiling):     {rate_ceiling:,.0f} records/s")
    print(f"  worker / passthrough:               {bare / rate_ceiling:.0%}")


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def push_lane(
    port: int, schedule: list[tuple[float, str, bytes]], sent: dict[str, float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for at, message_id, request in schedule:
        await asyncio.sleep(max(0.0, at - time.time()))
        sent[message_id] = time.time()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )  # fmt: skip
        answer = await reader.readexactly(length)
        if answer != b"success":
            raise RuntimeError(f"push refused: {answer!r}")
    writer.close()


async def latency(bootstrap: str, scratch: Path, rate: int, seconds: int) -> None:
    from urllib.parse import urlencode

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
    template = next(iter(sandbox.World(seed=7, origin=T0, rate=50.0).calls(0))).dr_fields(ZONE)
    lanes = 16
    schedules: list[list[tuple[float, str, bytes]]] = [[] for _ in range(lanes)]
    total = rate * seconds
    start = time.time() + 2.0
    for number in range(total):
        message_id = f"latency-{number}"
        body = urlencode({**template, "messageid": message_id}).encode()
        item = (start + number / rate, message_id, http_request("/nxcloud/voice/dr", body))
        schedules[number % lanes].append(item)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    consumer = AIOKafkaConsumer(stage.names.call_events, **stage.kafka())
    try:
        receiver.await_line("Application startup complete")
        async with consumer:
            await consumer.seek_to_end()
            pushing = asyncio.gather(*(push_lane(port, s, sent) for s in schedules))
            deadline = start + seconds + 60
            while len(seen) < total and time.time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        seen.setdefault(orjson.loads(record.value)["message_id"], now)
            await pushing
    finally:
        process.stop()
        receiver.stop()
    delays = sorted(seen[m] - sent[m] for m in seen if m in sent)
    achieved = total / (max(sent.values()) - min(sent.values()))
    print(f"latency: {total:,} DR pushes at {achieved:,.0f}/s through the receiver, one worker")
    print(f"  call events seen:  {len(seen):,} of {total:,}")
    print(f"  push -> event p50: {statistics.median(delays) * 1000:,.0f} ms")
    print(f"  push -> event p99: {delays[int(len(delays) * 0.99)] * 1000:,.0f} ms")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=25_000, help="calls in the throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs of each kind")
    parser.add_argument("--rate", type=int, default=1000, help="DR pushes/s in the latency run")
    parser.add_argument("--seconds", type=int, default=30, help="length of the latency run")
    parser.add_argument("--state", type=int, default=1_000_000, help="calls in the memory run")
    parser.add_argument("--only", choices=["throughput", "latency", "memory"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        config = BrokerConfig(scratch / "kafka", free_port(), free_port(), heap="1g")
        with LocalKafka(config) as kafka:
            runs: dict[str, Any] = {
                "throughput": lambda: throughput(
                    kafka.bootstrap_servers, scratch, args.calls, args.rounds
                ),
                "latency": lambda: latency(
                    kafka.bootstrap_servers, scratch, args.rate, args.seconds
                ),
                "memory": lambda: memory(kafka.bootstrap_servers, scratch, args.state),
            }
            for name, run in runs.items():
                if args.only in (None, name):
                    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
