"""`nxcloud-connector reconcile` on the real broker: the table, JSON, CSV, and the calls
behind a number, over records the reconciler wrote from a day of every kind of call."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from connector import admin, envelope
from connector.errors import ConfigError
from connector.merge import CallState, merge
from connector.report import days_between, parse_day
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.process_helpers import run_cli
from tests.reconciliation_helpers import (
    GROUP_CALLS,
    calls,
    checkpoint,
    provisional,
    receipts,
    settled,
    subset,
    yesterday_at_ten,
)

NOW = datetime.now(UTC)
START = yesterday_at_ten(NOW)
DAY = START.date().isoformat()


def events() -> list[dict[str, Any]]:
    """Every event the worker writes for the day's calls, in turn."""
    found = calls(START)
    states: dict[str, CallState] = {}
    written = []
    for phase in (provisional(found), receipts(found), settled(found)):
        for letter, observation, at in phase:
            state, event = merge(states.get(letter), observation, at)
            states[letter] = state
            if event is not None:
                written.append(event)
    return written


@pytest.fixture
async def reconciled_day(settings: Settings, topic_names: TopicNames) -> dict[str, str]:
    """The day's call events on a call-event topic, the poller's checkpoint, and the
    reconciler's records of them; the environment the commands need."""
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    names = TopicNames().with_suffix(suffix)
    await admin.converge(settings, declare(settings, names))
    from aiokafka import AIOKafkaProducer

    async with AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
        source = envelope.source(settings)
        for event in events():
            await producer.send(names.call_events, orjson.dumps(event),
                                key=event["call_id"].encode(),
                                headers=envelope.headers(event, source))  # fmt: skip
        await producer.send_and_wait(names.poller_state, checkpoint(NOW), key=b"default")
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "NXCLOUD_TOPIC_SUFFIX": suffix, "NXCLOUD_TOPIC_PARTITIONS": "3"}  # fmt: skip
    done = run_cli("reconciler", "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "groups written: 2"
    return env


def test_the_table_shows_each_group_the_days_total_and_the_flags(
    reconciled_day: dict[str, str],
) -> None:
    shown = run_cli("reconcile", "--day", DAY, env=reconciled_day)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:6] == ["day", "service", "country", "status", "calls", "matched"]
    rows = {tuple(line.split()[1:3]): line.split() for line in lines[1:4]}
    group = rows[("group_call", "86")]
    # calls, matched, cdr-only, dr-only, awaiting, mismatched, within, cost, dr, cdr, mismatch
    assert group[3:] == ["open", "8", "6", "1", "1", "0/0", "1", "1", "0.257", "0.221",
                         "0.271", "2", "0.05"]  # fmt: skip
    assert rows[("notification", "55")][3:6] == ["open", "1", "1"]
    total = lines[3].split()
    assert total[:2] == [DAY, "total"]
    assert total[2:6] == ["open", "9", "7", "1"]
    assert "open: the figures can still change" in shown.stdout
    assert "days in Asia/Shanghai" in shown.stdout


def test_json_holds_the_records_and_the_totals(reconciled_day: dict[str, str]) -> None:
    shown = run_cli("reconcile", "--since", DAY, "--until", DAY, "--json", env=reconciled_day)
    assert shown.returncode == 0, shown.stderr
    found = orjson.loads(shown.stdout)
    by_service = {r["service"]: r for r in found["records"]}
    assert subset(by_service["group_call"], GROUP_CALLS) == GROUP_CALLS
    assert found["totals"]["all"]["calls"] == 9
    assert found["totals"]["days"][DAY]["cost_mismatch"] == {
        "calls": 2, "amount": "0.05", "difference": "0.05",
    }  # fmt: skip


def test_csv_has_a_line_per_group_with_dotted_columns(reconciled_day: dict[str, str]) -> None:
    shown = run_cli("reconcile", "--day", DAY, "--csv", env=reconciled_day)
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert [(r["service"], r["calls"]) for r in rows] == [("group_call", "8"),
                                                          ("notification", "1")]  # fmt: skip
    assert rows[0]["fields.cycles.mismatched"] == "1"
    assert rows[0]["cost_mismatch.amount"] == "0.05"


@pytest.mark.parametrize(
    ("kind", "letters"),
    [("cdr-only", "C"), ("dr-only", "D"), ("cost-mismatch", "EG"), ("within-tolerance", "F"),
     ("mismatched", "G")],
)  # fmt: skip
def test_the_calls_behind_a_number(reconciled_day: dict[str, str], kind: str, letters: str) -> None:
    expected = {f"{900000 + ord(letter)}" for letter in letters}
    listed = run_cli("reconcile", "--day", DAY, "--calls", kind, "--json", env=reconciled_day)
    assert listed.returncode == 0, listed.stderr
    found = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {event["message_id"] for event in found} == expected
    assert {event["kind"] for event in found} == {kind}
    table = run_cli("reconcile", "--day", DAY, "--calls", kind, env=reconciled_day)
    assert table.stdout.splitlines()[-1] == f"{len(expected)} calls"
    assert all(message in table.stdout for message in expected)


def test_days_are_dates_today_or_yesterday_and_a_range_in_order() -> None:
    today = date(2026, 12, 7)
    assert parse_day("yesterday", today) == date(2026, 12, 6)
    assert parse_day("2026-11-30", today) == date(2026, 11, 30)
    assert days_between(date(2026, 11, 30), date(2026, 12, 1)) == [date(2026, 11, 30),
                                                                   date(2026, 12, 1)]  # fmt: skip
    with pytest.raises(ConfigError, match="not a day"):
        parse_day("monday", today)
    with pytest.raises(ConfigError, match="before"):
        days_between(today, today - timedelta(days=1))
