"""The worker's /metrics follow what it was fed, its lag and the calls missing a source."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from connector import admin
from connector.local import sandbox
from connector.local.broker import free_port
from connector.merge import CallState, missing
from connector.settings import Settings
from connector.topics import TopicNames, declare
from connector.worker.telemetry import (
    Behind,
    WorkerMetrics,
    behind,
    reason_label,
)
from tests.worker_helpers import (
    cdr_record,
    dr_record,
    revisions_on,
    start_worker,
    stop,
    topics_and_env,
)  # fmt: skip

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=4)


def state(sources: set[str], first_seen: datetime | None) -> CallState:
    return CallState("c", "notice", "m", "+1", "1", "1", sources=frozenset(sources),
                     first_seen_at=first_seen)  # fmt: skip


def hours(number: int) -> datetime:
    return NOW - timedelta(hours=number)


def test_a_call_lacks_its_dr_past_the_grace_and_its_cdr_past_a_day() -> None:
    assert missing(state({"cdr"}, hours(3)), NOW, GRACE) is None
    assert missing(state({"cdr"}, hours(5)), NOW, GRACE) == "dr"
    assert missing(state({"dr"}, hours(23)), NOW, GRACE) is None
    assert missing(state({"dr"}, hours(25)), NOW, GRACE) == "cdr"
    assert missing(state({"dr", "cdr"}, hours(100)), NOW, GRACE) is None
    assert missing(state({"cdr"}, None), NOW, GRACE) is None


def test_lag_counts_from_the_next_offset_to_process_and_ages_from_the_last_processed() -> None:
    assert behind(None, 3, None, 100.0, 90.0) is None
    assert behind(10, None, None, 100.0, 90.0) is None
    assert behind(10, 10, 50.0, 100.0, 90.0) == Behind(0, 0.0)
    assert behind(10, 4, 70.0, 100.0, 90.0) == Behind(6, 30.0)
    assert behind(10, 4, None, 100.0, 90.0) == Behind(6, 10.0)


def test_dead_letter_reasons_are_bounded_labels_without_the_bad_value() -> None:
    assert reason_label("not a raw record: JSONDecodeError: x") == "not_raw"
    assert reason_label("phone has no digits: 'abc'") == "bad_phone"
    assert reason_label("time is not yyyy-MM-dd HH:mm:ss: '1'") == "bad_time"
    assert reason_label("cycles is not a number: 'x'") == "bad_number"
    assert reason_label("messageid is missing") == "no_messageid"
    assert reason_label("something new") == "unusable"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in metrics.items() if sample == name)


def test_a_catch_up_reports_its_time_and_rate_and_counts_the_records_applied() -> None:
    """Each catch-up from the changelog: its time, its records per second of that time when
    it read any, and every record applied counted once."""
    metrics = WorkerMetrics()
    metrics.restored_from_changelog(50_000, 2.0)
    metrics.restored_from_changelog(0, 0.5)  # a later one that found nothing new
    sample = metrics.registry.get_sample_value
    assert sample("nxcloud_worker_restore_records_per_second") == 25_000
    assert sample("nxcloud_worker_recovery_seconds") == 0.5
    assert sample("nxcloud_worker_restored_records_total") == 50_000


async def test_the_worker_metrics_follow_what_it_was_fed(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """A backlog fed before the worker starts: lag above zero, then zero once it caught
    up; the counts as fed; the CDR-only calls counted without DR past their grace."""
    world = sandbox.World(seed=5, origin=datetime.now(UTC) - timedelta(hours=1), rate=1.0)
    calls = [call for message in range(30) for call in world.calls(message)]
    with_dr, cdr_only = calls[:10], calls[10:]
    provisional = [cdr_record(call, False) for call in calls]
    repeats = provisional[:1] * 20000  # enough work to see the lag before it is done
    drs = [dr_record(call, number) for number, call in enumerate(with_dr)]
    port = free_port()
    async with topics_and_env(settings, topic_names) as (names, env, producer):
        for key, value in provisional + repeats:
            await producer.send(names.cdr_raw, value, key=key)
        for key, value in drs:
            await producer.send(names.dr_raw, value, key=key)
        for number in range(3):
            await producer.send(names.dr_raw, b"not json", key=b"bad|%d" % number)
        await producer.flush()
        worker = start_worker(
            {**env, "NXCLOUD_WORKER_METRICS_PORT": str(port),
             "NXCLOUD_WORKER_EXPIRY_INTERVAL_SECONDS": "1",
             "NXCLOUD_WORKER_DR_GRACE_SECONDS": "1"},
            tmp_path / "a",
        )  # fmt: skip
        try:
            lags: list[float] = []
            deadline, metrics = time.monotonic() + 180, {}
            while time.monotonic() < deadline:
                assert worker.poll() is None, "the worker exited"
                try:
                    metrics = await asyncio.to_thread(scrape, port)
                except OSError:
                    metrics = {}
                if metrics.get(("nxcloud_worker_ready", ())):
                    lags.append(total(metrics, "nxcloud_worker_lag"))
                    done = total(metrics, "nxcloud_worker_events_total") == len(calls) + len(
                        with_dr
                    )
                    if done and lags[-1] == 0 and total(metrics, "nxcloud_worker_calls"):
                        break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"the metrics did not settle: lags {lags[-5:]}, {metrics}")
        finally:
            await asyncio.to_thread(stop, worker, signal.SIGTERM)
    consumed = {labels: value for (name, labels), value in metrics.items()
                if name == "nxcloud_worker_records_total"}  # fmt: skip
    assert consumed == {
        (("topic", names.cdr_raw),): len(provisional) + len(repeats),
        (("topic", names.dr_raw),): len(drs) + 3,
    }
    assert metrics[("nxcloud_worker_repeats_total", ())] == len(repeats)
    assert metrics[("nxcloud_worker_dead_letters_total", (("reason", "not_raw"),))] == 3
    assert metrics[("nxcloud_worker_calls", ())] == len(calls)
    assert metrics[("nxcloud_worker_calls_without_dr", ())] == len(cdr_only)
    assert metrics[("nxcloud_worker_calls_without_cdr", ())] == 0
    assert metrics[("nxcloud_worker_oldest_unprocessed_seconds", ())] == 0
    assert metrics[("nxcloud_worker_batch_seconds_count", ())] > 0
    assert metrics[("nxcloud_worker_rebalances_total", ())] >= 1
    assert metrics[("nxcloud_worker_rebalance_seconds_count", ())] >= 1
    assert max(lags) > 0, lags
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert "\x1b" not in "".join(lines)  # no colours, and no banner: every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(orjson.loads(line)) for line in lines)
    print(f"lag samples: first {lags[:5]}, max {max(lags)}, {len(lags)} scrapes")


async def test_a_worker_started_before_its_topics_waits_then_consumes(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    """It names the missing topics, is not ready (no heartbeat), and once they are
    created it consumes them."""
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    names = TopicNames().with_suffix(suffix)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_TOPIC_PARTITIONS": "3",
    }
    data = tmp_path / "a"
    log = data.with_suffix(".log")
    worker = start_worker(env, data)
    try:
        deadline = time.monotonic() + 60
        while names.dr_raw not in log.read_text(errors="replace"):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert "waiting for topics" in log.read_text()
        assert not (data / "heartbeat").exists()
        assert "Ready" not in log.read_text()
        async with admin.admin_client(settings) as client:
            await admin.ensure(client, declare(settings, names))
        call = next(iter(sandbox.World(seed=3, origin=NOW, rate=1.0).calls(0)))
        async with topics_and_env(settings, topic_names) as (_, _, producer):
            key, value = dr_record(call, 0)
            await producer.send_and_wait(names.dr_raw, value, key=key)
        events = await revisions_on(settings.kafka_bootstrap_servers, names, 1, 1)
        assert len(events) == 1
    finally:
        await asyncio.to_thread(stop, worker, signal.SIGTERM)
