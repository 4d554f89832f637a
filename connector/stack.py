"""`nxcloud-connector up`: the whole pipeline on one machine, for trying it out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from connector import admin, broker
from connector.errors import ConnectorError
from connector.settings import Settings
from connector.topics import TopicNames, declare

READY_WITHIN = 60.0
SANDBOX_PORT = 8090


def up(settings: Settings) -> int:
    """Start a local Kafka unless KAFKA_BOOTSTRAP_SERVERS names one, create topics, run all."""
    with ExitStack() as stack:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            local = broker.LocalKafka(broker.BrokerConfig(broker.default_data_dir()))
            print(f"Starting Apache Kafka {broker.KAFKA_VERSION} ...", flush=True)
            stack.enter_context(local)
        applied = asyncio.run(admin.converge(settings, declare(settings)))
        for drift in applied.plan.drift:
            print(f"drift   {drift}", flush=True)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
        receiver_url = f"http://127.0.0.1:{settings.receiver_port}"
        sandboxed = settings.nxcloud_appkey is None
        if sandboxed:
            env |= {
                "NXCLOUD_APPKEY": "sandbox",
                "NXCLOUD_SECRETKEY": "sandbox",
                "NXCLOUD_CDR_URL": f"http://127.0.0.1:{SANDBOX_PORT}/api/voiceSms/getVoiceCdr",
                "NXCLOUD_POLLER_WINDOW_SECONDS": "60",
                "NXCLOUD_POLLER_SETTLE_SECONDS": "30",
            }
        # Entered in this order, stopped in the reverse: the sandbox stops pushing first,
        # the receiver then drains what it holds, the poller and the worker commit, and
        # Kafka stops last.
        stack.enter_context(_running(["worker"], env))
        stack.enter_context(_running(["poller"], env))
        receiver = stack.enter_context(_running(["receiver"], env))
        _await_ready(receiver, receiver_url + "/readyz")
        if sandboxed:
            sandbox = ["sandbox", f"--port={SANDBOX_PORT}",
                       f"--push-to={receiver_url}/nxcloud/voice/dr"]  # fmt: skip
            stack.enter_context(_running(sandbox, env))
        names = TopicNames.of(settings)
        print(f"Kafka:     {settings.kafka_bootstrap_servers}", flush=True)
        print(f"Topics:    {', '.join(spec.name for spec in declare(settings))}", flush=True)
        print(f"DR push:   {receiver_url}/nxcloud/voice/dr  (give this URL to NXCloud)")
        print(f"CDR API:   {env.get('NXCLOUD_CDR_URL', settings.nxcloud_cdr_url)}", flush=True)
        if sandboxed:
            print(
                f"Sandbox:   http://127.0.0.1:{SANDBOX_PORT} (no NXCLOUD_APPKEY: it plays NXCloud)"
            )
        print("Watch:     nxcloud-connector tail", flush=True)
        print("Running. Stop with Ctrl-C.", flush=True)
        _report_until_stopped(settings, names)
        print("Stopping ...", flush=True)
    return 0


@contextmanager
def _running(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", *command], env=env,
        preexec_fn=broker.die_with_parent,  # noqa: PLW1509 - no part outlives `up`
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _report_until_stopped(settings: Settings, names: TopicNames) -> None:
    """Progress every few seconds (one redrawn line on a terminal) until SIGINT/SIGTERM."""
    stopping = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
    live = sys.stdout.isatty()
    topics = {"DRs received": names.dr_raw, "CDR rows polled": names.cdr_raw,
              "call events": names.call_events, "dead letters": names.dead_letter}  # fmt: skip
    while signal.sigtimedwait(stopping, 2.0 if live else 30.0) is None:
        try:
            counts = asyncio.run(admin.record_counts(settings, list(topics.values())))
        except ConnectorError:
            continue
        line = "  ".join(f"{label}: {counts[topic]:,}" for label, topic in topics.items())
        print(f"\r{line}" if live else line, end="" if live else "\n", flush=True)
    if live:
        print(flush=True)


def _await_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConnectorError(f"the receiver exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise ConnectorError(f"{url} not ready within {READY_WITHIN:.0f} s")
