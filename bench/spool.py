"""Spool benchmark: fill a 1 GiB spool with Kafka down, restart the receiver on it, bring
Kafka back and drain it, sampling the receiver's resident memory throughout.

The receiver runs as in production (`nxcloud-connector receiver`, one process); wrk pushes
DRs padded with an extra field so 1 GiB fills in well under a minute. Prints fill and drain
rates and the receiver's peak RSS in each phase. Run: `make bench-spool`.
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
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.receiver import LUA, topic_size
from connector import admin
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings
from connector.topics import TopicNames, declare

MIB = 1 << 20
MB = 1_000_000
TARGET = 200 * MB


class Memory:
    """Peak resident memory of one process, sampled every 50 ms, per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.05):
            try:
                text = status.read_text()
            except OSError:
                return
            match = re.search(r"VmRSS:\s+(\d+) kB", text)
            if match:
                self.peak = max(self.peak, int(match.group(1)) * 1024)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)
    }


@contextmanager
def receiver(env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, str, Memory]]:
    """The push URL, the management URL (metrics) and the receiver's memory."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "receiver"], env=env, stdout=output, stderr=output
        )
    memory = Memory(process.pid)
    url = f"http://127.0.0.1:{port}"
    management = f"http://127.0.0.1:{env['NXCLOUD_RECEIVER_MANAGEMENT_PORT']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(management + "/healthz", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url, management, memory
    finally:
        process.terminate()
        process.wait(60)
        memory.stop()


def fill(url: str, management: str, limit: int, pad: int, connections: int) -> tuple[float, int]:
    """Push until the spool holds `limit` bytes (less room for one push); seconds, pushes."""
    started = time.monotonic()
    while metrics(management)["nxcloud_receiver_spool_bytes"] < limit - 4 * pad:
        subprocess.run(
            ["wrk", "-t1", f"-c{connections}", "-d5s", "--timeout", "30s", "-s", str(LUA),
             url + "/nxcloud/voice/dr", "--", "0", str(pad)],
            capture_output=True, check=True,
        )  # fmt: skip
    seconds = time.monotonic() - started
    pushes = metrics(management)['nxcloud_receiver_requests_total{outcome="success"}']
    return seconds, int(pushes)


@dataclass
class Figures:
    pushes: int = 0
    spool_bytes: float = 0.0
    depth: float = 0.0
    stored: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)
    lines: Counter[str] = field(default_factory=Counter)


def measure(work: Path, limit: int, pad: int, connections: int) -> Figures:
    figures = Figures()
    kafka = LocalKafka(BrokerConfig(work / "kafka", free_port(), free_port(), heap="1g"))
    kafka.start()
    try:
        bootstrap = kafka.bootstrap_servers
        settings = Settings(kafka_bootstrap_servers=bootstrap)
        asyncio.run(admin.converge(settings, declare(settings)))
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NXCLOUD_SPOOL_DIR": str(work / "spool"),
            "NXCLOUD_SPOOL_MAX_BYTES": str(limit),
            "NXCLOUD_RECEIVER_KAFKA_TIMEOUT_MS": "500",
            "NXCLOUD_RECEIVER_HOST": "127.0.0.1",
            "NXCLOUD_RECEIVER_PORT": str(port),
            "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
            "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(free_port()),
        }
        log = work / "receiver.log"
        with receiver(env, port, log) as (url, management, memory):
            kafka.stop()
            figures.seconds["fill"], figures.pushes = fill(url, management, limit, pad, connections)
            figures.spool_bytes = metrics(management)["nxcloud_receiver_spool_bytes"]
        figures.peaks["fill"] = memory.peak
        opened = time.monotonic()
        with receiver(env, port, log) as (url, management, memory):
            figures.seconds["open"] = time.monotonic() - opened
            figures.peaks["open"] = memory.peak
            figures.depth = metrics(management)["nxcloud_receiver_spool_depth"]
            kafka.start()
            started = time.monotonic()
            while not metrics(management).get("nxcloud_receiver_spool_drained_total"):
                time.sleep(0.05)
            first = time.monotonic()
            figures.seconds["reconnect"] = first - started
            while metrics(management)["nxcloud_receiver_spool_depth"] > 0:
                time.sleep(0.1)
            figures.seconds["drain"] = time.monotonic() - first
            figures.peaks["drain"] = memory.peak
        figures.stored = asyncio.run(topic_size(bootstrap, TopicNames().dr_raw))
    finally:
        kafka.stop()
    figures.lines = Counter(
        orjson.loads(line).get("message", "?") if line.startswith("{") else line[:60]
        for line in log.read_text(errors="replace").splitlines()
    )
    return figures


def report(f: Figures) -> None:
    mib, seconds, peaks = f.spool_bytes / MIB, f.seconds, f.peaks
    print(f"spool benchmark ({os.cpu_count()} cores, one receiver process, broker on loopback)")
    print(f"  filled with Kafka down: {mib:.0f} MiB, {f.pushes} pushes answered success in "
          f"{seconds['fill']:.1f} s ({f.pushes / seconds['fill']:.0f} pushes/s, "
          f"{mib / seconds['fill']:.1f} MiB/s); peak RSS {peaks['fill'] / MB:.0f} MB")  # fmt: skip
    print(f"  restart on the full spool: up in {seconds['open']:.1f} s, {f.depth:.0f} records "
          f"waiting; peak RSS {peaks['open'] / MB:.0f} MB")  # fmt: skip
    print(f"  Kafka back: first records drained after {seconds['reconnect']:.1f} s (reconnect)")
    print(f"  then drained in {seconds['drain']:.1f} s "
          f"({f.depth / seconds['drain']:.0f} records/s, {mib / seconds['drain']:.1f} MiB/s); "
          f"peak RSS {peaks['drain'] / MB:.0f} MB")  # fmt: skip
    print(f"  raw topic holds {f.stored} records for {f.pushes} pushes answered success")
    print(f"  receiver log lines over the whole run: {f.lines.total()}, most common:")
    for message, count in f.lines.most_common(6):
        print(f"    {count:6d}  {message}")
    peak = max(peaks.values())
    verdict = "under" if peak < TARGET else "OVER"
    print(f"  peak RSS throughout: {peak / MB:.0f} MB ({verdict} the 200 MB target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spool-mib", type=int, default=1024)
    parser.add_argument("--pad", type=int, default=16000, help="extra bytes per push")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(Path(scratch), args.spool_mib * MIB, args.pad, args.connections)
    report(figures)
    return 0 if max(figures.peaks.values()) < TARGET and figures.stored >= figures.pushes else 1


if __name__ == "__main__":
    raise SystemExit(main())
