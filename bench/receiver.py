"""Receiver benchmark: real HTTP from wrk, one uvicorn worker, a real broker on loopback.

Prints DR/s at saturation for 30 s (each one acknowledged by Kafka), p50/p99 latency at
about 2,000 DR/s, and the ceiling of the same app with publishing replaced by a no-op.
Run: `make bench-receiver` (or `python -m bench.receiver --seconds 30`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from connector import admin, clients
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings
from connector.topics import TopicNames, declare

LUA = Path(__file__).with_name("push.lua")


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk(url: str, seconds: int, connections: int, pause_ms: int = 0) -> Run:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
        "-s", str(LUA), url, "--", str(pause_ms),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Run(rate, _percentile(output, "50"), _percentile(output, "99"), total, errors)


def _percentile(output: str, which: str) -> float:
    match = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match, output
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@contextmanager
def receiver(bootstrap: str, spool: Path, noop: bool) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NXCLOUD_SPOOL_DIR": str(spool),
        "BENCH_NOOP": "1" if noop else "0",
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "bench.receiver_app:app", "--factory",
            "--http", "bench.receiver_app:Protocol",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--no-proxy-headers", "--log-level", "warning",
        ],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # any answer means the app has started: the push port has no /readyz (404)
                with urllib.request.urlopen(url + "/readyz", timeout=1):  # noqa: S310
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
            time.sleep(0.1)
        yield url + "/nxcloud/voice/dr"
    finally:
        process.terminate()
        process.wait(30)


async def topic_size(bootstrap: str, topic: str) -> int:
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    async with admin.admin_client(settings) as client:
        count = (await admin.describe(client, [topic]))[topic].partitions
    consumer = AIOKafkaConsumer(**clients.options(settings, enable_auto_commit=False))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        with LocalKafka(BrokerConfig(work / "kafka", free_port(), free_port(), heap="1g")) as kafka:
            bootstrap = kafka.bootstrap_servers
            plain = Settings(kafka_bootstrap_servers=bootstrap)
            asyncio.run(admin.converge(plain, declare(plain)))
            topic = TopicNames().dr_raw
            with receiver(bootstrap, work / "spool", noop=False) as url:
                wrk(url, 5, args.connections)  # warm-up
                before = asyncio.run(topic_size(bootstrap, topic))
                saturated = wrk(url, args.seconds, args.connections)
                stored = asyncio.run(topic_size(bootstrap, topic)) - before
                paced = paced_run(url, args.seconds)
            with receiver(bootstrap, work / "spool-noop", noop=True) as url:
                wrk(url, 5, args.connections)
                ceiling = wrk(url, args.seconds, args.connections)
    report(saturated, stored, paced, ceiling, args.seconds)
    return 0


def paced_run(url: str, seconds: int, target: float = 2000.0, connections: int = 20) -> Run:
    """wrk has no fixed-rate mode: pace each connection, calibrated on a short run."""
    cycle_ms = connections / target * 1000
    pause = round(cycle_ms)
    for _ in range(2):
        probe = wrk(url, 5, connections, pause)
        latency_ms = connections / probe.rate * 1000 - pause
        pause = max(0, round(cycle_ms - latency_ms))
    return wrk(url, seconds, connections, pause)


def report(saturated: Run, stored: int, paced: Run, ceiling: Run, seconds: int) -> None:
    print(f"receiver benchmark ({os.cpu_count()} cores, one uvicorn worker, broker on loopback)")
    print(f"  saturation, {seconds} s:     {saturated.rate:8.0f} DR/s answered success "
          f"(p50 {saturated.p50_ms:.1f} ms, p99 {saturated.p99_ms:.1f} ms, "
          f"{saturated.errors} errors)")  # fmt: skip
    print(f"  acknowledged by Kafka:  {stored / seconds:8.0f} DR/s ({stored} records on the raw "
          f"topic for {saturated.requests} requests)")  # fmt: skip
    print(f"  paced at {paced.rate:.0f} DR/s:     p50 {paced.p50_ms:.2f} ms, "
          f"p99 {paced.p99_ms:.2f} ms ({paced.errors} errors)")  # fmt: skip
    print(f"  no-op publish ceiling:  {ceiling.rate:8.0f} DR/s")
    print(f"  with Kafka / ceiling:   {saturated.rate / ceiling.rate:8.0%}")


if __name__ == "__main__":
    raise SystemExit(main())
