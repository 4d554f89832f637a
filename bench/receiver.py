"""Receiver benchmark: real HTTP from wrk, the receiver as `nxcloud-connector receiver` serves
it (one process, uvloop, both listeners), a real broker on loopback; plain HTTP and TLS.

For each of plain and TLS: DR/s at saturation for `--seconds` (each one acknowledged by
Kafka), p50/p99 latency at about 2,000 DR/s, and the ceiling of the same app with publishing
replaced by a no-op. Then the edge under storms (`bench/storm.py`): connections reset at once,
after 10 and 50 ms, in a TLS handshake and after it, and closed, on both ports, and how long
the connection gauges take to fall back to 0; and real TLS clients (Python's ssl, curl,
openssl s_client) pushing together. With `--old-tree`, the server CPU per request of that
checkout's receiver and this one's, in alternating (ABBA) runs, read from /proc.
The load average is printed with each part: the machine may be shared.
Run: `make bench-receiver` (or `python -m bench.receiver --seconds 30`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import storm
from connector import admin, clients
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.local.certs import Authority, Issued
from connector.settings import Settings
from connector.topics import TopicNames, declare

LUA = Path(__file__).with_name("push.lua")
PARTS = ("throughput", "storms", "clients", "cpu")


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    socket_errors: int


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f}"


def wrk(url: str, seconds: int, connections: int, pause_ms: int = 0, *extra: str) -> Run:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
        "-s", str(LUA), url, "--", str(pause_ms), *extra,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    failed = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0
    errors = (int(bad.group(1)) if bad else 0) + failed
    return Run(rate, _percentile(output, "50"), _percentile(output, "99"), total, errors, failed)


def _percentile(output: str, which: str) -> float:
    match = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    assert match, output
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    push: int
    management: int
    scheme: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.push}/nxcloud/voice/dr"

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.management}/metrics"
        with urllib.request.urlopen(url, timeout=10) as page:
            for line in page.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0


@contextmanager
def receiver(bootstrap: str, spool: Path, noop: bool, issued: Issued | None) -> Iterator[Served]:
    push, management = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NXCLOUD_SPOOL_DIR": str(spool),
        "NXCLOUD_RECEIVER_HOST": "127.0.0.1",
        "NXCLOUD_RECEIVER_PORT": str(push),
        "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
        "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(management),
        "NXCLOUD_LOG_LEVEL": "WARNING",
        "BENCH_NOOP": "1" if noop else "0",
    }
    if issued is not None:
        env["NXCLOUD_RECEIVER_TLS_CERT_FILE"] = str(issued.cert)
        env["NXCLOUD_RECEIVER_TLS_KEY_FILE"] = str(issued.key)
    process = subprocess.Popen([sys.executable, "-m", "bench.receiver_app"], env=env)
    served = Served(process, push, management, "https" if issued else "http")
    try:
        _wait(f"http://127.0.0.1:{management}/healthz", process)
        yield served
    finally:
        process.terminate()
        process.wait(60)


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # any answer: the app has started
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
        time.sleep(0.1)


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


@dataclass(frozen=True)
class Ceiling:
    """The receiver against its no-op ceiling: acknowledged DR/s over the no-op's, and the
    server CPU per request (µs) of each."""

    ratio: float
    cpu_real_us: float
    cpu_noop_us: float


def throughput(
    bootstrap: str,
    work: Path,
    issued: Issued | None,
    seconds: int,
    connections: int,
    *,
    paced: bool = True,
) -> Ceiling:
    """The receiver with Kafka and with a no-op store side by side, driven in turns (ABBA,
    `seconds` each in all), so that the machine's other load weighs on both alike; then
    (`paced`) the latency at about 2,000 DR/s."""
    topic = TopicNames().dr_raw
    kind = "TLS" if issued else "plain"
    with (
        receiver(bootstrap, work / f"spool-{kind}", False, issued) as real,
        receiver(bootstrap, work / f"spool-noop-{kind}", True, issued) as noop,
    ):
        for served in (real, noop):
            wrk(served.url, 5, connections)  # warm-up
        started = load()
        runs: dict[str, list[Run]] = {"real": [], "noop": []}
        cpu: dict[str, float] = {"real": 0.0, "noop": 0.0}
        stored = 0
        for which in ("real", "noop", "noop", "real"):
            served = real if which == "real" else noop
            before = asyncio.run(topic_size(bootstrap, topic)) if which == "real" else 0
            used = _cpu_seconds(served.process.pid)
            runs[which].append(wrk(served.url, max(1, seconds // 2), connections))
            cpu[which] += _cpu_seconds(served.process.pid) - used
            if which == "real":
                stored += asyncio.run(topic_size(bootstrap, topic)) - before
        at_pace = paced_run(real.url, seconds) if paced else None
    return report(
        kind, runs, stored, at_pace, cpu, seconds=2 * max(1, seconds // 2), started=started
    )


def paced_run(url: str, seconds: int, target: float = 2000.0, connections: int = 20) -> Run:
    """wrk has no fixed-rate mode: pace each connection, calibrated on a short run."""
    cycle_ms = connections / target * 1000
    pause = round(cycle_ms)
    for _ in range(2):
        probe = wrk(url, 5, connections, pause)
        latency_ms = connections / probe.rate * 1000 - pause
        pause = max(0, round(cycle_ms - latency_ms))
    return wrk(url, seconds, connections, pause)


def report(
    kind: str,
    runs: dict[str, list[Run]],
    stored: int,
    paced: Run | None,
    cpu: dict[str, float],
    *,
    seconds: int,
    started: str,
) -> Ceiling:
    real, noop = runs["real"], runs["noop"]
    answered = sum(run.requests for run in real)
    ceiling = sum(run.requests for run in noop) / seconds
    socket_errors = sum(run.socket_errors for run in real)
    per_request = {which: cpu[which] / sum(r.requests for r in runs[which]) * 1e6 for which in cpu}
    print(f"receiver benchmark, {kind} ({os.cpu_count()} cores, one receiver process, broker"
          f" on loopback; with Kafka and no-op in turns, {seconds} s each; {started} at the"
          " start)")  # fmt: skip
    print(f"  saturation:             {answered / seconds:8.0f} DR/s answered success "
          f"(p50 {real[0].p50_ms:.1f}/{real[1].p50_ms:.1f} ms, p99 {real[0].p99_ms:.1f}/"
          f"{real[1].p99_ms:.1f} ms, {sum(r.errors for r in real)} errors, {socket_errors}"
          " socket errors)")  # fmt: skip
    print(f"  acknowledged by Kafka:  {stored / seconds:8.0f} DR/s ({stored} records on the raw "
          f"topic for {answered} requests)")  # fmt: skip
    if paced is not None:
        print(f"  paced at {paced.rate:.0f} DR/s:     p50 {paced.p50_ms:.2f} ms, "
              f"p99 {paced.p99_ms:.2f} ms ({paced.errors} errors)")  # fmt: skip
    print(f"  no-op publish ceiling:  {ceiling:8.0f} DR/s"
          f" ({sum(r.socket_errors for r in noop)} socket errors)")  # fmt: skip
    print(f"  acknowledged / ceiling: {stored / seconds / ceiling:8.0%}")
    print(f"  server CPU per request: {per_request['real']:.0f} µs with Kafka,"
          f" {per_request['noop']:.0f} µs no-op ({per_request['noop'] / per_request['real']:.0%}"
          " of a request's CPU is the edge and the app)")  # fmt: skip
    print(f"  ({load()} at the end)", flush=True)
    return Ceiling(stored / seconds / ceiling, per_request["real"], per_request["noop"])


STORMS: dict[str, Callable[[], storm.Ending]] = {
    "reset at once": lambda: storm.reset_after(0),
    "reset after 10 ms": lambda: storm.reset_after(0.01),
    "reset after 50 ms": lambda: storm.reset_after(0.05),
    "close after 10 ms": lambda: storm.close_after(0.01),
}


async def storms(served: Served, count: int, concurrency: int, context: ssl.SSLContext) -> None:
    """Each storm on each port, one after another; how long until nothing is counted."""
    ports = [("push", served.push, "nxcloud_receiver_connections", 0)]
    ports.append(("management", served.management, "nxcloud_receiver_management_connections", 1))
    tls = served.scheme == "https"
    for port_name, port, gauge, asking in ports:
        kinds: dict[str, Callable[[], storm.Ending]] = dict(STORMS)
        if tls and port_name == "push":
            hello = storm.client_hello()
            kinds["reset in the TLS handshake"] = functools.partial(storm.reset_in_handshake, hello)
        for name, ending in kinds.items():
            refused = _refused(served, port_name)
            started = time.monotonic()
            failed = await storm.storm(port, count, ending(), concurrency)
            stormed = time.monotonic() - started
            settled = await _settled(served, gauge, asking)
            print(f"  {port_name:10} {name:27} {count} in {stormed:5.1f} s ({failed} not"
                  f" connected, {_refused(served, port_name) - refused:.0f} refused at the"
                  f" cap); gauge 0 after {settled:.1f} s", flush=True)  # fmt: skip
        if tls and port_name == "push":
            started = time.monotonic()
            failed = await storm.handshake_storm(port, count, context, concurrency)
            settled = await _settled(served, gauge, asking)
            print(f"  {port_name:10} {'reset after the handshake':27} {count} in"
                  f" {time.monotonic() - started:5.1f} s ({failed} not connected); gauge 0 after"
                  f" {settled:.1f} s", flush=True)  # fmt: skip


def _refused(served: Served, port_name: str) -> float:
    name = "nxcloud_receiver_connections_refused_total"
    if port_name == "management":
        name = "nxcloud_receiver_management_connections_refused_total"
    return served.metric(name)


async def _settled(served: Served, gauge: str, asking: int) -> float:
    """Seconds until `gauge` (less the connection asking for it) is 0; -1 after 120 s."""
    started = time.monotonic()
    while (held := await asyncio.to_thread(served.metric, gauge) - asking) != 0:
        if time.monotonic() - started > 120:
            print(f"    {gauge} still {held:.0f} after 120 s")
            return -1.0
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def run_storms(
    bootstrap: str, work: Path, issued: Issued, ca: Path, *, count: int, each: int
) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    for tls in (False, True):
        kind = "TLS" if tls else "plain"
        print(f"edge under storms, push port {kind}, {each} at a time ({load()})", flush=True)
        with receiver(bootstrap, work / f"spool-storm-{kind}", False, issued if tls else None) as s:
            asyncio.run(storms(s, count, each, context))


def run_clients(
    bootstrap: str, work: Path, issued: Issued, ca: Path, *, count: int, each: int
) -> None:
    topic = TopicNames().dr_raw
    counts = dict.fromkeys(storm.CLIENTS, count)
    print(f"real TLS clients, {count} each, {each} at a time, interleaved ({load()})", flush=True)
    with receiver(bootstrap, work / "spool-clients", False, issued) as served:
        before = asyncio.run(topic_size(bootstrap, topic))
        started = time.monotonic()
        outcomes = asyncio.run(storm.real_clients(served.push, ca, counts, each))
        elapsed = time.monotonic() - started
        stored = asyncio.run(topic_size(bootstrap, topic)) - before
        refused = served.metric("nxcloud_receiver_connections_refused_total")
    success = sum(outcome["success"] for outcome in outcomes.values())
    for name, outcome in outcomes.items():
        print(f"  {name:10} {dict(outcome)}")
    print(f"  {success} answered success in {elapsed:.0f} s, {stored} records on the raw topic"
          f" ({success - stored} pushes lost), {refused:.0f} refused at the cap; {load()}",
          flush=True)  # fmt: skip


def cpu_per_request(tree: Path, seconds: int = 5) -> float:
    """µs of the receiver's CPU (user + system, from /proc) per request: `tree`'s receiver
    protocol and app served by uvicorn, publishing a no-op, the example as a GET, wrk -t1
    -c16."""
    port = free_port()
    with tempfile.TemporaryDirectory() as spool:
        env = {**os.environ, "BENCH_NOOP": "1", "NXCLOUD_SPOOL_DIR": spool,
               "PYTHONPATH": str(tree)}  # fmt: skip
        process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "bench.receiver_app:app", "--factory",
                "--http", "bench.receiver_app:Protocol", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--no-proxy-headers",
                "--log-level", "warning",
            ],
            env=env, cwd=tree,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url + "/readyz", process)
            wrk(url, 2, 16, 0, "0", "get")
            before = _cpu_seconds(process.pid)
            run = wrk(url, seconds, 16, 0, "0", "get")
            used = _cpu_seconds(process.pid) - before
        finally:
            process.terminate()
            process.wait(30)
    assert run.errors == 0, f"{run.errors} errors"
    return used / run.requests * 1e6


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_cpu(old: Path, rounds: int) -> None:
    here = Path(__file__).resolve().parent.parent
    print(f"server CPU per request, {old.name} vs this tree, ABBA x {rounds} ({load()})")
    figures: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(rounds):
        for which in ("old", "new", "new", "old"):
            figures[which].append(cpu_per_request(old if which == "old" else here))
    for which, values in figures.items():
        shown = " / ".join(f"{value:.0f}" for value in values)
        print(f"  {which}: median {statistics.median(values):.0f} µs ({shown})")
    ratio = statistics.median(figures["new"]) / statistics.median(figures["old"])
    print(f"  new / old: {ratio:.2f} ({load()})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--storm", type=int, default=10_000, help="connections per storm")
    parser.add_argument("--clients", type=int, default=10_000, help="pushes per TLS client")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--only", action="append", choices=PARTS, help="run just these parts")
    parser.add_argument("--old-tree", type=Path, help="a checkout to compare CPU per request")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of the CPU part")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    if "cpu" in parts and args.old_tree is not None:
        run_cpu(args.old_tree.resolve(), args.rounds)
    if not parts - {"cpu"}:
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        authority = Authority(work / "ca", name="bench CA")
        issued = authority.issue("push", "push", ("127.0.0.1",))
        with LocalKafka(BrokerConfig(work / "kafka", free_port(), free_port(), heap="1g")) as kafka:
            bootstrap = kafka.bootstrap_servers
            plain = Settings(kafka_bootstrap_servers=bootstrap)
            asyncio.run(admin.converge(plain, declare(plain)))
            if "throughput" in parts:
                for tls in (None, issued):
                    throughput(bootstrap, work, tls, args.seconds, args.connections)
            if "storms" in parts:
                run_storms(
                    bootstrap, work, issued, authority.cert_file,
                    count=args.storm, each=args.concurrency,
                )  # fmt: skip
            if "clients" in parts:
                run_clients(
                    bootstrap, work, issued, authority.cert_file,
                    count=args.clients, each=args.concurrency,
                )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
