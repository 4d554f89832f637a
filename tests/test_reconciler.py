"""The reconciler against a real broker, fed by the real worker: a day of every kind of
call gives the figures worked out by hand, as the day goes by (the DR grace, the poller's
last poll, the end of the provider's 7 days), after restarts and kills of the worker and
the reconciler, and rebuilt from a call-event topic that `replay --into` made."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from connector import admin
from connector import reconciliation as rec
from connector.clock import rfc3339
from connector.local.broker import free_port
from connector.reconciler.loop import Reconciler
from connector.reconciler.store import RocksStore
from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic
from tests.process_helpers import run_cli
from tests.reconciliation_helpers import (
    GROUP_CALLS,
    NOTIFICATIONS,
    calls,
    cdr_records,
    checkpoint,
    dr_records,
    latest_records,
    subset,
    yesterday_at_ten,
)
from tests.support import ZONE, valid
from tests.worker_helpers import revisions_on, scrape, start_worker, stop, topics_and_env

NOW = datetime.now(UTC)
START = yesterday_at_ten(NOW)
DAY = START.date().isoformat()
GROUP_KEY = f"{DAY}|group_call|86"
NOTIFIED_KEY = f"{DAY}|notification|55"


async def send(producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        await producer.send(topic, value, key=key)
    await producer.flush()


async def reconciled(
    settings: Settings | str,
    topic: str,
    wanted: Callable[[dict[str, dict[str, Any]]], bool],
    deadline: float = 120,
) -> dict[str, dict[str, Any]]:
    """The latest record per key on `topic`, once `wanted` holds of them."""
    values = await read_topic(settings, topic, lambda got: wanted(latest_records(got)),
                              deadline=deadline)  # fmt: skip
    return latest_records(values)


def is_final(latest: dict[str, dict[str, Any]]) -> bool:
    return GROUP_KEY in latest and latest[GROUP_KEY]["status"] == "final"


def figures_are(key: str, expected: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda latest: key in latest and subset(latest[key], expected) == expected


async def test_a_day_goes_from_awaiting_to_exact_figures_and_from_open_to_final(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """The reconciler in this process, on a clock the test moves; the worker as a process."""
    found = calls(START)
    moment = [START + timedelta(hours=2)]
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        worker = start_worker(env, tmp_path / "worker")
        local = Settings.from_env(env)
        store = RocksStore(tmp_path / "reconciler")
        stopping = asyncio.Event()
        reconciler = Reconciler(local, names, store, clock=lambda: moment[0], tick_seconds=0.5)
        running = asyncio.create_task(reconciler.run(stopping))
        try:
            await send(producer, names.cdr_raw, cdr_records(found, settle=False))
            await send(producer, names.dr_raw, dr_records(found))
            await revisions_on(settings.kafka_bootstrap_servers, names, 2, 7)
            early = await reconciled(local, names.reconciliation, lambda latest: (
                GROUP_KEY in latest and latest[GROUP_KEY]["matched"] == 6))  # fmt: skip
            group = early[GROUP_KEY]
            assert (group["calls"], group["awaiting_dr"], group["awaiting_cdr"]) == (8, 1, 1)
            assert (group["cdr_only"], group["dr_only"], group["cdr_settled"]) == (0, 0, False)
            assert group["cost_check"]["pending"] == 6
            assert group["status"] == "open"
            # The settled rows come, the poller polls the day for good, the grace passes.
            await send(producer, names.cdr_raw, cdr_records(found, settle=True))
            moment[0] = START + timedelta(hours=6)
            await producer.send_and_wait(names.poller_state, checkpoint(START + timedelta(days=1)),
                                         key=b"default")  # fmt: skip
            exact = await reconciled(local, names.reconciliation,
                                     figures_are(GROUP_KEY, GROUP_CALLS))  # fmt: skip
            assert subset(exact[NOTIFIED_KEY], NOTIFICATIONS) == NOTIFICATIONS
            assert exact[GROUP_KEY]["status"] == "open"
            for record in exact.values():
                valid("reconciliation.v1.json", record)
            # Seven days and the settle delay after the day's end, with nothing new: final.
            day_end = datetime.combine(START.date() + timedelta(days=1), datetime.min.time(), ZONE)
            moment[0] = day_end + timedelta(days=7, seconds=local.poller_settle_seconds)
            final = await reconciled(local, names.reconciliation, is_final)
            assert subset(final[GROUP_KEY], GROUP_CALLS) == GROUP_CALLS
            assert final[GROUP_KEY]["final_at"] == rfc3339(moment[0])
        finally:
            stopping.set()
            await asyncio.wait_for(running, 60)
            store.close()
            await asyncio.to_thread(stop, worker, signal.SIGTERM)


def start_reconciler(env: dict[str, str], data: Path, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as output:
        store = {"NXCLOUD_RECONCILER_STORE": "rocksdb://", "NXCLOUD_RECONCILER_DATA_DIR": str(data)}
        return subprocess.Popen(
            [sys.executable, "-m", "connector", "reconciler"],
            env={**env, **store}, stdout=output, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


async def test_the_figures_stay_exact_through_kills_and_restarts_and_a_rebuild(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """The worker and the reconciler as processes on the real clock (yesterday's calls):
    the reconciler killed mid-day and started again on its store, the worker restarted, a
    second reconciler standing by that takes over when the first is stopped; then the day
    rebuilt from a call-event topic `replay --into` made."""
    found = calls(START)
    replay_since = datetime.now(UTC) - timedelta(seconds=5)
    async with topics_and_env(settings, topic_names) as (names, base, producer):
        port = free_port()
        env = {**base, "NXCLOUD_RECONCILER_METRICS_PORT": str(port)}
        worker = start_worker(env, tmp_path / "worker")
        first = start_reconciler(env, tmp_path / "first", tmp_path / "first.log")
        second: subprocess.Popen[str] | None = None
        try:
            drs = dr_records(found)
            await send(producer, names.cdr_raw, cdr_records(found, settle=False))
            await send(producer, names.dr_raw, drs[:4])
            await reconciled(settings, names.reconciliation, lambda latest: (
                GROUP_KEY in latest and latest[GROUP_KEY]["matched"] >= 3))  # fmt: skip
            first.send_signal(signal.SIGKILL)  # mid-day, its store as it was
            first.wait(30)
            await asyncio.to_thread(stop, worker, signal.SIGTERM)
            worker = start_worker(env, tmp_path / "worker")
            await send(producer, names.dr_raw, drs[4:])
            first = start_reconciler(env, tmp_path / "first", tmp_path / "first.log")
            standby_env = {**env, "NXCLOUD_RECONCILER_METRICS_PORT": str(free_port())}
            second = start_reconciler(standby_env, tmp_path / "second", tmp_path / "second.log")
            await send(producer, names.cdr_raw, cdr_records(found, settle=True))
            await producer.send_and_wait(names.poller_state, checkpoint(datetime.now(UTC)),
                                         key=b"default")  # fmt: skip
            live = await reconciled(settings, names.reconciliation,
                                    figures_are(GROUP_KEY, GROUP_CALLS))  # fmt: skip
            assert subset(live[NOTIFIED_KEY], NOTIFICATIONS) == NOTIFICATIONS
            ports = {first: port, second: int(standby_env["NXCLOUD_RECONCILER_METRICS_PORT"])}
            writer = await asyncio.to_thread(await_active, ports)
            metrics = await asyncio.to_thread(scrape, ports[writer])
            yesterday = 'day="last_closed",service="group_call"'
            assert metrics[f"nxcloud_reconciler_cdr_only{{{yesterday}}}"] == 1
            assert metrics[f"nxcloud_reconciler_dr_only{{{yesterday}}}"] == 1
            assert metrics[f"nxcloud_reconciler_cost_mismatch_amount{{{yesterday}}}"] == 0.05
            # The writer stops; the one standing by takes over and has nothing to correct.
            before = await admin.record_counts(settings, [names.reconciliation])
            await asyncio.to_thread(stop, writer, signal.SIGTERM)
            del ports[writer]
            assert await asyncio.to_thread(await_active, ports) is not writer
            await asyncio.sleep(2)  # what it would write, it writes at once
            after = await admin.record_counts(settings, [names.reconciliation])
            assert after == before, "the new writer wrote figures that had not changed"
            # Rebuilt: the call events merged afresh into a new topic, reconciled anew.
            rebuilt = f"{names.call_events}.rebuilt"
            suffix_env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                          "NXCLOUD_TOPIC_SUFFIX": env["NXCLOUD_TOPIC_SUFFIX"],
                          "NXCLOUD_TOPIC_PARTITIONS": "3"}  # fmt: skip
            done = run_cli("replay", "--since", replay_since.isoformat(), "--into", rebuilt,
                           env=suffix_env)  # fmt: skip
            assert done.returncode == 0, done.stderr
            into = f"{names.reconciliation}.rebuilt"
            done = run_cli("reconciler", "--once", "--source", rebuilt, "--into", into,
                           env=suffix_env)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "groups written: 2"
        finally:
            for process in (first, second, worker):
                if process is not None and process.poll() is None:
                    await asyncio.to_thread(stop, process, signal.SIGTERM)
    again = await reconciled(settings, into, lambda latest: len(latest) == 2)
    assert {key: rec.figures(value) for key, value in again.items()} == {
        key: rec.figures(value) for key, value in live.items()
    }


def await_active(
    ports: dict[subprocess.Popen[str], int], within: float = 90
) -> subprocess.Popen[str]:
    """The one reconciler of `ports` that writes, once exactly one says it does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        active = []
        for process, port in ports.items():
            try:
                if scrape(port).get("nxcloud_reconciler_active") == 1:
                    active.append(process)
            except OSError:
                pass
        if len(active) == 1:
            return active[0]
        time.sleep(0.3)
    raise AssertionError(f"no single reconciler writes within {within} s")
