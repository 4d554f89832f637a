"""The example consumer keeps the latest revision of each call, and reading the topic again
(into the same table or a new one) gives the same table."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connector import admin, clients, envelope
from connector.settings import Settings
from connector.topics import TopicNames, declare
from examples.call_table import WrongSchema, apply, follow, open_table, rows
from tests.secure_helpers import SecureKafka
from tests.worker_helpers import stream

ROOT = Path(__file__).resolve().parents[1]


async def test_reading_the_topic_twice_gives_the_same_table(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
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
        sent = [await producer.send(spec.name, orjson.dumps(event), key=event["call_id"].encode(),
                                    headers=envelope.headers(event, source))
                for event in events]  # fmt: skip
        for delivery in sent:
            await delivery

    bootstrap = settings.kafka_bootstrap_servers
    db = open_table(tmp_path / "calls.sqlite")
    first = await follow(bootstrap, db, spec.name, stop_at_end=True)
    table = rows(db)
    assert first.read == len(events)
    assert {call: (r, e) for call, (r, e, _) in table.items()} == {
        call: (event["revision"], event["event_id"]) for call, event in latest.items()
    }
    assert all(table[call][2] == event for call, event in latest.items())

    again = await follow(bootstrap, db, spec.name, from_beginning=True, stop_at_end=True)
    assert (again.read, again.changed) == (len(events), 0)
    assert rows(db) == table
    resumed = await follow(bootstrap, db, spec.name, stop_at_end=True)
    assert (resumed.read, resumed.changed) == (0, 0)

    fresh = open_table(tmp_path / "fresh.sqlite")
    await follow(bootstrap, fresh, spec.name, stop_at_end=True)
    assert rows(fresh) == table


def test_an_older_revision_and_a_repeat_change_nothing(tmp_path: Path) -> None:
    events, _ = stream()
    first, second = events[0], next(e for e in events[1:] if e["call_id"] == events[0]["call_id"])
    headers = dict(envelope.headers(first, "/test"))
    db = open_table(tmp_path / "calls.sqlite")
    assert apply(db, headers, orjson.dumps(second))
    assert not apply(db, headers, orjson.dumps(first))
    assert not apply(db, headers, orjson.dumps(second))
    assert rows(db)[second["call_id"]][1] == second["event_id"]


def test_an_event_of_another_schema_stops_the_consumer(tmp_path: Path) -> None:
    event = stream()[0][0]
    headers = {**dict(envelope.headers(event, "/test")),
               "ce_dataschema": b"urn:nxcloud-connector:schema:call-event:v2.0"}  # fmt: skip
    with pytest.raises(WrongSchema):
        apply(sqlite3.connect(tmp_path / "x.sqlite"), headers, orjson.dumps(event))


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m examples.call_table ARGS` as a user runs it, from the repository."""
    return subprocess.run([sys.executable, "-m", "examples.call_table", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def test_the_example_reads_a_secured_cluster_with_the_components_settings(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    """The example consumer as a process, on the secured broker (SASL_SSL, SCRAM, ACLs) with
    the same KAFKA_* settings as the components, from an env file whose password is a file;
    a user without grants is refused in one line."""
    operator = secure_kafka.settings("operator")
    spec = next(s for s in declare(operator, secure_kafka.names)
                if s.name == secure_kafka.names.call_events)  # fmt: skip
    spec = replace(spec, name=f"{spec.name}.table-{uuid.uuid4().hex[:8]}")
    async with admin.admin_client(operator) as client:
        await admin.ensure(client, [spec])
    events, latest = stream()
    source = envelope.source(operator)
    async with AIOKafkaProducer(**clients.options(operator, acks="all")) as producer:
        for event in events:
            await producer.send_and_wait(spec.name, orjson.dumps(event),
                                         key=event["call_id"].encode(),
                                         headers=envelope.headers(event, source))  # fmt: skip

    def env_file(user: str) -> Path:
        env = secure_kafka.env(user)
        password = tmp_path / f"{user}.password"
        password.write_text(env.pop("KAFKA_SASL_PASSWORD") + "\n")
        path = tmp_path / f"{user}.env"
        lines = [f"{key}={value}" for key, value in env.items() if key.startswith("KAFKA_")]
        path.write_text("\n".join([*lines, f"KAFKA_SASL_PASSWORD_FILE={password}"]) + "\n")
        return path

    db = tmp_path / "calls.sqlite"
    done = run_example("--env-file", str(env_file("operator")), "--topic", spec.name,
                       "--db", str(db), "--stop-at-end")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"read {len(events)} events, changed "), done.stdout
    table = open_table(db)
    try:
        assert {call: (r, e) for call, (r, e, _) in rows(table).items()} == {
            call: (event["revision"], event["event_id"]) for call, event in latest.items()
        }
    finally:
        table.close()
    refused = run_example("--env-file", str(env_file("stranger")), "--topic", spec.name,
                          "--db", str(tmp_path / "refused.sqlite"), "--stop-at-end")  # fmt: skip
    assert refused.returncode == 4
    assert refused.stderr.strip().splitlines() == [
        f"python -m examples.call_table: Kafka ACLs deny user 'stranger' access to a topic "
        f"({spec.name}): grant it (connector/acls.py, deploy/)"
    ]
