"""`nxcloud-connector up`: the whole pipeline on one machine, for trying it out."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from connector import admin
from connector.errors import ConnectorError
from connector.local import broker
from connector.local.console import Console
from connector.settings import Settings, default_state_dir
from connector.topics import TopicNames, declare

READY_WITHIN = 60.0


@dataclasses.dataclass(frozen=True)
class Ports:
    """What `up` binds besides the settings' ports: the local Kafka (broker and controller,
    when it starts one) and the sandbox. A test gives free ones, so a `make up` keeps its own."""

    kafka: int = 9092
    controller: int = 0  # 0: kafka + 1
    sandbox: int = 8090
    host: str = "127.0.0.1"  # where the receiver, the metrics and the sandbox listen


# What `up` binds to Ports.host unless the environment says otherwise.
BINDS = ("NXCLOUD_RECEIVER_HOST", "NXCLOUD_RECEIVER_MANAGEMENT_HOST", "NXCLOUD_METRICS_HOST")


def up(settings: Settings, *, verbose: bool = False, ports: Ports | None = None) -> int:
    """Start a local Kafka unless KAFKA_BOOTSTRAP_SERVERS names one, create topics, run all."""
    ports = ports or Ports()
    console = Console(sys.stdout, live=sys.stdout.isatty(), verbose=verbose)
    logs = default_state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        local = None
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            config = broker.BrokerConfig(
                broker.default_data_dir(), port=ports.kafka, controller_port=ports.controller
            )
            local = broker.LocalKafka(config)
            print(f"Starting Apache Kafka {broker.KAFKA_VERSION} ...", flush=True)
            stack.enter_context(local)
            bootstrap = local.bootstrap_servers
            settings = dataclasses.replace(settings, kafka_bootstrap_servers=bootstrap)
        applied = asyncio.run(admin.converge(settings, declare(settings)))
        for drift in applied.plan.drift:
            print(f"drift   {drift}", flush=True)
        env = {**dict.fromkeys(BINDS, ports.host), **os.environ,
               "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}  # fmt: skip
        settings = Settings.from_env(env)
        receiver_url = f"http://{_reach(settings.receiver_host)}:{settings.receiver_port}"
        management = _reach(settings.receiver_management_host)
        management_url = f"http://{management}:{settings.receiver_management_port}"
        sandboxed = settings.nxcloud_appkey is None
        if sandboxed:
            env |= {
                "NXCLOUD_APPKEY": "sandbox",
                "NXCLOUD_SECRETKEY": "sandbox",
                "NXCLOUD_CDR_URL": f"http://127.0.0.1:{ports.sandbox}/api/voiceSms/getVoiceCdr",
                "NXCLOUD_POLLER_WINDOW_SECONDS": "60",
                "NXCLOUD_POLLER_SETTLE_SECONDS": "30",
                # A reconciliation within minutes: a DR is lost after two minutes, and the
                # sandbox's rows are polled for good a minute after the first poll.
                "NXCLOUD_WORKER_DR_GRACE_SECONDS": "120",
                "NXCLOUD_POLLER_REPOLL_AFTER_SECONDS": "60",
            }
        # Entered in this order, stopped in the reverse: the sandbox stops pushing first,
        # the receiver then drains what it holds, the poller and the worker commit, and
        # Kafka stops last.
        commands = {"worker": ["worker"], "reconciler": ["reconciler"], "poller": ["poller"],
                    "receiver": ["receiver"]}  # fmt: skip
        if sandboxed:
            commands["sandbox"] = ["sandbox", f"--host={ports.host}", f"--port={ports.sandbox}",
                                   "--history-hours=0.1",
                                   f"--push-to={receiver_url}/nxcloud/voice/dr"]  # fmt: skip
        for name, command in commands.items():
            running[name] = stack.enter_context(
                _running(command, env, console, name, logs / f"{name}.log")
            )
            if name == "receiver":
                _await_ready(running[name], management_url + "/readyz")
        names = TopicNames.of(settings)
        print(f"Kafka:     {settings.kafka_bootstrap_servers}", flush=True)
        print(f"Topics:    {', '.join(spec.name for spec in declare(settings))}", flush=True)
        print(f"DR push:   {receiver_url}/nxcloud/voice/dr  (give this URL to NXCloud)")
        print(f"Receiver:  {management_url}/metrics, /readyz, /healthz (management)", flush=True)
        print(f"CDR API:   {env.get('NXCLOUD_CDR_URL', settings.nxcloud_cdr_url)}", flush=True)
        if sandboxed:
            print(
                f"Sandbox:   http://{_reach(ports.host)}:{ports.sandbox} (no NXCLOUD_APPKEY: it "
                "plays NXCloud)"
            )
        print(f"Listening: {_listening(settings, ports if sandboxed else None)}", flush=True)
        print(f"Watch:     {tail_command(settings)}", flush=True)
        reconcile = tail_command(settings).removesuffix(" tail") + " reconcile --day today"
        print(f"Reconcile: {reconcile}", flush=True)
        print(f"Logs:      {logs}/{{{','.join(commands)}}}.log (full; here: warnings and errors"
              f"{', everything' if verbose else ''})", flush=True)  # fmt: skip
        if local is not None:
            print(f"Kafka log: {local.log_file}", flush=True)
        print("Running. Stop with Ctrl-C.", flush=True)
        _report_until_stopped(settings, names, running, console)
        console.say("Stopping ...")
    return 0


def _reach(host: str) -> str:
    """The address to reach a listener bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def _listening(settings: Settings, sandbox: Ports | None) -> str:
    """Who listens where, as bound: one line, so a 0.0.0.0 is seen."""
    binds = [
        (settings.receiver_host, f"receiver {settings.receiver_port}"),
        (settings.receiver_management_host, f"management {settings.receiver_management_port}"),
        (settings.metrics_host, f"metrics {settings.poller_metrics_port} (poller), "
                                f"{settings.worker_metrics_port} (worker), "
                                f"{settings.reconciler_metrics_port} (reconciler)"),
    ]  # fmt: skip
    if sandbox is not None:
        binds.append((sandbox.host, f"sandbox {sandbox.sandbox}"))
    hosts: dict[str, list[str]] = {}
    for host, what in binds:
        hosts.setdefault(host, []).append(what)
    said = "; ".join(f"{host}: {', '.join(what)}" for host, what in hosts.items())
    if set(hosts) == {"127.0.0.1"}:
        said += " (this machine only; `up --host 0.0.0.0` for every interface)"
    return said


def tail_command(settings: Settings, executable: str = sys.executable) -> str:
    """`tail` as another terminal can run it: by name when that name is on the PATH and is
    this install, else by its path; with the Kafka when it is not the default."""
    installed = Path(executable).parent / "nxcloud-connector"
    found = shutil.which("nxcloud-connector")
    if found is not None and Path(found).resolve() == installed.resolve():
        command = "nxcloud-connector"
    elif installed.exists():
        command = (
            os.path.relpath(installed) if installed.is_relative_to(Path.cwd()) else str(installed)
        )
    else:
        command = f"{executable} -m connector"
    default = Settings.__dataclass_fields__["kafka_bootstrap_servers"].default
    where = settings.kafka_bootstrap_servers
    return f"{'' if where == default else f'KAFKA_BOOTSTRAP_SERVERS={where} '}{command} tail"


@contextmanager
def _running(
    command: list[str], env: dict[str, str], console: Console, name: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", *command], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=broker.die_with_parent,  # noqa: PLW1509 - no part outlives `up`
    )  # fmt: skip
    assert process.stdout is not None
    console.follow(name, process.stdout, log)
    try:
        yield process
    finally:
        broker.stop_process(process, 30)


def _report_until_stopped(
    settings: Settings,
    names: TopicNames,
    running: dict[str, subprocess.Popen[bytes]],
    console: Console,
) -> None:
    """A status line per component every few seconds (redrawn in place on a terminal)
    until SIGINT/SIGTERM."""
    stopping = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
    counted = {
        "receiver": [("DRs received", names.dr_raw)],
        "poller": [("CDR rows polled", names.cdr_raw)],
        "worker": [("call events", names.call_events), ("dead letters", names.dead_letter)],
        "reconciler": [("records", names.reconciliation)],
    }
    topics = [topic for pairs in counted.values() for _, topic in pairs]
    counts: dict[str, int] = {}
    interval = 2.0 if console.live else 30.0
    while True:
        with suppress(ConnectorError):
            counts = asyncio.run(admin.record_counts(settings, topics))
        lines = status_lines(running, counted, counts)
        today = reconciled_today(settings.reconciler_metrics_port)
        console.status([line + today if line.startswith("  reconciler") else line
                        for line in lines])  # fmt: skip
        if signal.sigtimedwait(stopping, interval) is not None:
            return


def status_lines(
    running: dict[str, subprocess.Popen[bytes]],
    counted: dict[str, list[tuple[str, str]]],
    counts: dict[str, int],
) -> list[str]:
    lines = []
    for name, process in running.items():
        code = process.poll()
        state = "running" if code is None else f"exited ({code})"
        figures = "  ".join(f"{label}: {counts[topic]:,}" for label, topic in counted.get(name, [])
                            if topic in counts)  # fmt: skip
        lines.append(f"  {name:<{max(9, len(name) + 1)}}{state:<12}{figures}".rstrip())
    return lines


def reconciled_today(port: int) -> str:
    """Today's reconciliation as the reconciler that writes serves it, in a few words."""
    if not port:
        return ""
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return ""
    figures = dict.fromkeys(("calls", "cdr_only", "dr_only", "awaiting_dr", "awaiting_cdr"), 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if 'day="today"' in rest and name.removeprefix("nxcloud_reconciler_") in figures:
            figures[name.removeprefix("nxcloud_reconciler_")] += float(rest.rsplit(" ", 1)[1])
    if not figures["calls"]:
        return ""
    awaiting = int(figures["awaiting_dr"] + figures["awaiting_cdr"])
    return (f"  today: {int(figures['calls']):,} calls, {int(figures['cdr_only']):,} CDR-only, "
            f"{int(figures['dr_only']):,} DR-only, {awaiting:,} awaiting")  # fmt: skip


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
