"""The example consumer keeps a PostgreSQL table in step: repeats, a replay and a consumer
killed in the middle of a batch all end in one row per call at its latest revision."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from connector import admin, envelope
from connector.settings import Settings
from connector.topics import TopicNames, declare
from examples.call_table import open_table, rows
from tests.worker_helpers import stream


def consume(bootstrap: str, topic: str, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "examples.call_table", "--bootstrap-servers", bootstrap,
         "--topic", topic, "--db", url, "--stop-at-end", *extra],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def await_blocked_on_positions(url: str, deadline: float = 60.0) -> None:
    """Until a consumer's transaction has upserted its rows and waits to store offsets."""
    give_up = time.monotonic() + deadline
    with psycopg.connect(url, autocommit=True) as watch:
        while time.monotonic() < give_up:
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%INSERT INTO positions%'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.1)
    raise AssertionError("no consumer waits to store its offsets")


async def test_repeats_a_replay_and_a_kill_mid_batch_end_in_the_same_table(
    settings: Settings, topic_names: TopicNames, postgres: str
) -> None:
    spec = next(s for s in declare(settings, topic_names) if s.name == topic_names.call_events)
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, [spec])
    events, latest = stream()
    source = envelope.source(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    async with producer:
        for event in events:
            await producer.send(spec.name, orjson.dumps(event), key=event["call_id"].encode(),
                                headers=envelope.headers(event, source))  # fmt: skip
        await producer.flush()
    bootstrap, table = settings.kafka_bootstrap_servers, open_table(postgres)

    # A consumer killed mid-batch: its rows are written, its offsets wait on a lock.
    with psycopg.connect(postgres) as blocker:
        blocker.execute("LOCK TABLE positions IN EXCLUSIVE MODE")
        killed = consume(bootstrap, spec.name, postgres)
        try:
            await asyncio.to_thread(await_blocked_on_positions, postgres)
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.wait()
        blocker.rollback()
    assert rows(table) == {}, "a batch committed without its offsets"

    done = consume(bootstrap, spec.name, postgres)
    output, _ = await asyncio.to_thread(done.communicate, timeout=120)
    assert done.returncode == 0, output
    assert f"read {len(events)} events" in output
    found = rows(table)
    assert {call: (revision, event_id) for call, (revision, event_id, _) in found.items()} == {
        call: (event["revision"], event["event_id"]) for call, event in latest.items()
    }
    assert all(found[call][2] == event for call, event in latest.items())

    again = consume(bootstrap, spec.name, postgres, "--from-beginning")
    output, _ = await asyncio.to_thread(again.communicate, timeout=120)
    assert f"read {len(events)} events, changed 0 rows" in output, output
    assert rows(table) == found

    per_day = table.execute("SELECT sum(calls), sum(cost) FROM cost_per_day").fetchone()
    costs = [event["billing"]["cost"] for event in latest.values()]
    assert per_day == (len(latest), sum(Decimal(cost) for cost in costs if cost is not None))
    open_costs = table.execute("SELECT count(*) FROM calls_cost_not_final").fetchone()
    assert open_costs == (sum(not e["billing"]["cost_final"] for e in latest.values()),)
    without_dr = table.execute("SELECT call_id FROM calls_without_dr").fetchall()
    assert {call for (call,) in without_dr} == {
        call for call, e in latest.items() if "dr" not in e["sources"]
    }
    table.close()


def day_records() -> list[dict[str, object]]:
    """The reconciler's records of a day, in the order written: early figures, exact ones,
    and the early ones once more (a writer that took over late), which must not win."""
    from tests.reconciliation_helpers import (
        AFTER_GRACE,
        GROUP_CALLS,
        POLLED,
        START,
        reconcile,
        the_day,
    )

    early = reconcile(the_day(), START + timedelta(hours=2), {})
    exact = reconcile(the_day(), AFTER_GRACE, POLLED)
    written = []
    for at, records in (("2026-11-23T04:00:00Z", early), ("2026-11-23T08:00:00Z", exact),
                        ("2026-11-23T03:00:00Z", early)):  # fmt: skip
        written += [{**record, "updated_at": at} for record in records.values()]
    assert any(subset_of(r, GROUP_CALLS) for r in written)
    return written


def subset_of(record: dict[str, object], expected: dict[str, object]) -> bool:
    return {name: record[name] for name in expected} == expected


async def test_the_reconciliation_table_keeps_each_days_latest_figures(
    settings: Settings, topic_names: TopicNames, postgres: str
) -> None:
    specs = [s for s in declare(settings, topic_names)
             if s.name in (topic_names.call_events, topic_names.reconciliation)]  # fmt: skip
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, specs)
    written = day_records()
    headers = [("ce_dataschema", b"urn:nxcloud-connector:schema:reconciliation:v1.0")]
    async with AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
        for record in written:
            key = f"{record['day']}|{record['service']}|{record['country_code']}".encode()
            await producer.send(topic_names.reconciliation, orjson.dumps(record), key=key,
                                headers=headers)  # fmt: skip
    bootstrap, table = settings.kafka_bootstrap_servers, open_table(postgres)
    extra = ("--reconciliation-topic", topic_names.reconciliation)
    done = consume(bootstrap, topic_names.call_events, postgres, *extra)
    output, _ = await asyncio.to_thread(done.communicate, timeout=120)
    assert done.returncode == 0, output
    assert f"read {len(written)} events, changed 4 rows" in output, output
    figures = table.execute(
        "SELECT service, calls, cdr_only, dr_only, cost, cdr_cost, cost_mismatch_amount, "
        "cdr_settled FROM reconciliation_figures ORDER BY service"
    ).fetchall()
    assert figures == [
        ("group_call", 8, 1, 1, Decimal("0.257"), Decimal("0.271"), Decimal("0.05"), True),
        ("notification", 1, 0, 0, Decimal("0.12"), Decimal("0.12"), Decimal("0"), True),
    ]
    again = consume(bootstrap, topic_names.call_events, postgres, "--from-beginning", *extra)
    output, _ = await asyncio.to_thread(again.communicate, timeout=120)
    assert f"read {len(written)} events, changed 0 rows" in output, output
    table.close()
