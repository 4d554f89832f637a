"""`nxcloud-connector up` runs Kafka, the receiver, the sandbox and the poller locally."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connector import admin
from connector.local.broker import free_port
from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic
from tests.process_helpers import read_until, run_cli
from tests.support import EXAMPLE_FIELDS, PROVIDER_EXAMPLE

pytestmark = pytest.mark.kafka  # starts its own Kafka through `up`


@dataclass(frozen=True)
class Isolated:
    """`up` on ports and topics of its own, so it runs beside a `make up` (9092, 8080, 8090,
    9102, 9103 and the production topic names) without touching it."""

    env: dict[str, str]
    args: tuple[str, ...]
    bootstrap: str
    names: TopicNames
    receiver_port: int
    management_port: int


def isolated(data: Path, **extra: str) -> Isolated:
    kafka, receiver, management = free_port(), free_port(), free_port()
    suffix = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "XDG_DATA_HOME": str(data),
        "NXCLOUD_RECEIVER_HOST": "127.0.0.1",
        "NXCLOUD_RECEIVER_PORT": str(receiver),
        "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
        "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(management),
        "NXCLOUD_POLLER_METRICS_PORT": str(free_port()),
        "NXCLOUD_WORKER_METRICS_PORT": str(free_port()),
        "NXCLOUD_RECONCILER_METRICS_PORT": str(free_port()),
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        **extra,
    }
    args = (f"--kafka-port={kafka}", f"--controller-port={free_port()}",
            f"--sandbox-port={free_port()}")  # fmt: skip
    names = TopicNames().with_suffix(suffix)
    return Isolated(env, args, f"127.0.0.1:{kafka}", names, receiver, management)


def start_up(up: Isolated) -> subprocess.Popen[str]:
    """`up` as a user starts it, once its status says the receiver is running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "up", *up.args], env=up.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Without a terminal, the status (a line per component) follows "Running.".
        status = read_until(process, "  receiver ", time.monotonic() + 120)
        assert "running" in status, status
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


async def test_up_stores_a_push_on_the_raw_topic_and_stops_cleanly(tmp_path: Path) -> None:
    up = isolated(tmp_path)
    port, management, names = up.receiver_port, up.management_port, up.names
    process = start_up(up)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 30
            ready = f"http://127.0.0.1:{management}/readyz"
            while (await http.get(ready)).text != "ready":
                assert time.monotonic() < deadline
            fields = {**EXAMPLE_FIELDS, "messageid": "up-1"}
            response = await http.post("/nxcloud/voice/dr", data=fields)
        assert (response.status_code, response.text) == (200, "success")
        raw = PROVIDER_EXAMPLE.replace(EXAMPLE_FIELDS["messageid"], "up-raw").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /nxcloud/voice/dr?%s HTTP/1.1\r\nHost: x\r\n\r\n" % raw)
        async with asyncio.timeout(15):
            reply = await reader.readuntil(b"success")
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200 ")
        records = await read_topic(
            up.bootstrap,
            names.dr_raw,
            lambda values: {"up-1", "up-raw"} <= {v["fields"]["messageid"] for v in values},
        )
        assert next(v for v in records if v["fields"]["messageid"] == "up-1")["fields"] == fields
        spaced = next(v for v in records if v["fields"]["messageid"] == "up-raw")["fields"]
        assert spaced == {**EXAMPLE_FIELDS, "messageid": "up-raw"}
        polled = await read_topic(
            up.bootstrap, names.cdr_raw, lambda values: len(values) >= 1, deadline=90
        )
        assert polled[0]["account"] == "default"
        events = await read_topic(
            up.bootstrap,
            names.call_events,
            lambda values: any(v["message_id"] == "up-1" for v in values),
            deadline=120,
        )
        assert next(v for v in events if v["message_id"] == "up-1")["sources"] == ["dr"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_up_interrupted_and_started_again_loses_no_pushed_dr(tmp_path: Path) -> None:
    up = isolated(tmp_path)
    names = up.names

    def received(values: list[Any]) -> set[tuple[str, str]]:
        return {(v["fields"]["messageid"], v["fields"]["phone"]) for v in values}

    def merged(values: list[Any]) -> set[tuple[str, str]]:
        return {(v["message_id"], v["phone_raw"]) for v in values if "dr" in v["sources"]}

    process = start_up(up)
    try:
        await read_topic(
            up.bootstrap, names.call_events,
            lambda values: len(merged(values)) >= 3, deadline=240,
        )  # fmt: skip
        process.send_signal(signal.SIGINT)  # mid-stream: the sandbox keeps pushing until then
        assert process.wait(timeout=120) == 0
        process = start_up(up)
        counted = Settings(kafka_bootstrap_servers=up.bootstrap)
        stored = (await admin.record_counts(counted, [names.dr_raw]))[names.dr_raw]
        pushed = received(await read_topic(up.bootstrap, names.dr_raw, lambda v: len(v) >= stored))
        assert len(pushed) >= 3
        seen: list[Any] = []

        def all_merged(values: list[Any]) -> bool:
            seen[:] = values
            return merged(values) >= pushed

        try:
            await read_topic(up.bootstrap, names.call_events, all_merged, deadline=180)
        except AssertionError:
            missing = pushed - merged(seen)
            ids = {message for message, _phone in missing}
            related = [(v["message_id"], v["phone_raw"], v["sources"], v["revision"])
                       for v in seen if v["message_id"] in ids]  # fmt: skip
            message = f"{len(missing)} DRs without an event: {missing}; {related}"
            raise AssertionError(message) from None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def read_terminal(master: int, until: Callable[[str], bool], deadline: float) -> str:
    """What a terminal on `master` showed, once `until` holds for it (or the end of it)."""
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process on the terminal has gone
                chunk = b""
            if not chunk:
                return seen.decode(errors="replace")
            seen += chunk
            if until(seen.decode(errors="replace")):
                return seen.decode(errors="replace")
    raise AssertionError(f"not seen within the deadline: {seen.decode(errors='replace')[-3000:]}")


def listening_on(port: int) -> set[str]:
    """The addresses a TCP port listens on, from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(str(ipaddress.ip_address(bytes.fromhex(address)[::-1]))
                          if len(address) == 8 else address)  # fmt: skip
    return found


def test_up_on_a_terminal_shows_the_urls_a_live_status_and_only_warnings(tmp_path: Path) -> None:
    """What a new user sees: where each part listens (this machine only, unless asked), a
    `tail` command that works as printed, call events soon, and no ERROR for the start-up's
    own races (a coordinator or a leader not elected yet)."""
    up = isolated(tmp_path, TERM="xterm")
    for bound_by_up in ("NXCLOUD_RECEIVER_HOST", "NXCLOUD_RECEIVER_MANAGEMENT_HOST"):
        del up.env[bound_by_up]
    port = up.receiver_port
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "up", *up.args], env=up.env,
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    try:
        shown = read_terminal(
            master, lambda text: re.search(r"call events: [1-9]", text) is not None,
            time.monotonic() + 240,
        )  # fmt: skip
        assert listening_on(port) == {"127.0.0.1"}
        assert listening_on(up.management_port) == {"127.0.0.1"}
        watch = re.search(r"Watch: +(.+?)\r?\n", shown)
        assert watch is not None, shown
        printed = subprocess.run(
            f"{watch[1]} --from-beginning --limit 2", shell=True, env=up.env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        assert [orjson.loads(line)["call_id"] for line in printed.stdout.splitlines()]
        assert len(printed.stdout.splitlines()) == 2
        process.send_signal(signal.SIGINT)
        shown += read_terminal(master, lambda _: False, time.monotonic() + 120)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    logs = tmp_path / "nxcloud-connector" / "logs"
    assert f"DR push:   http://127.0.0.1:{port}/nxcloud/voice/dr" in shown
    assert f"Logs:      {logs}/" in shown
    for name in ("worker", "reconciler", "poller", "receiver", "sandbox"):
        assert re.search(rf"  {name} +running", shown), name
        log = (logs / f"{name}.log").read_text()
        assert '"level":"info"' in log, name  # the file has everything
    assert "[^Worker]: Ready" in (logs / "worker.log").read_text()
    assert "\x1b[" in shown  # the status is redrawn in place
    assert '"level":"info"' not in shown  # no info lines shown
    assert "INFO" not in shown
    assert "ERROR" not in shown
    assert "Listening: 127.0.0.1: receiver" in shown
    assert "(this machine only; `up --host 0.0.0.0` for every interface)" in shown


def test_up_reconciles_cdr_only_and_dr_only_calls_within_minutes(tmp_path: Path) -> None:
    """The sandbox loses some pushes and leaves some rows out of its records: `reconcile`
    shows both kinds for today within a few minutes of `up`."""
    up = isolated(tmp_path)
    process = start_up(up)
    env = {**up.env, "KAFKA_BOOTSTRAP_SERVERS": up.bootstrap}
    started, totals = time.monotonic(), {}
    try:
        deadline = started + 600
        while time.monotonic() < deadline:
            shown = run_cli("reconcile", "--day", "today", "--json", env=env)
            if shown.returncode == 0 and shown.stdout.strip():
                totals = orjson.loads(shown.stdout)["totals"]["all"]
                # Both kinds, and as rare as the sandbox makes them (a worker slow to merge
                # the DRs makes CDR-only calls for a moment).
                gaps = totals["cdr_only"] + totals["dr_only"]
                if totals["cdr_only"] and totals["dr_only"] and totals["matched"] > 10 * gaps:
                    break
            time.sleep(10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert totals["cdr_only"] > 0, totals
    assert totals["dr_only"] > 0, totals
    assert totals["matched"] > 10 * (totals["cdr_only"] + totals["dr_only"]), totals
    print(
        f"after {time.monotonic() - started:.0f} s: {totals['calls']} calls, "
        f"{totals['cdr_only']} CDR-only, {totals['dr_only']} DR-only"
    )
