"""A downstream consumer: the latest revision of each call, in a SQLite table (the
embedded default) or a PostgreSQL one (`--db postgresql://...`, with a billing team's
views: examples/call_views.py).

It reads `nxcloud.voice.call-events` (every partition, assigned by hand: one process per
table) and keeps one row per `call_id`. What it relies on is what the topic guarantees:

- Every event of a call has the key `call_id`, so it is on one partition, in order.
- An event can come again (an exact repeat, same `event_id`): a worker that crashed merges
  its batch again. A replay of the topic brings every event again.
- A call's revisions count up from 1. After `NXCLOUD_WORKER_STATE_DAYS` without a change
  the worker forgets a call, and a later record starts it again at revision 1, with a
  later `updated_at`. So "newer" is the greater (`updated_at`, `revision`).

A row changes only for a newer event: a repeat or an older revision changes nothing, so
reading the topic twice gives the same table. The rows and the next offsets are written
in one transaction, so a crash never applies half a batch or skips one: the offsets are
committed with the rows, never before them.

It reaches Kafka with the same settings as the connector's components (the `KAFKA_*`
variables of docs/configuration.md: TLS, SASL PLAIN and SCRAM, OAUTHBEARER, Amazon MSK
IAM), from the environment or from `--env-file` files such as a Kafka component's
`kafka.env`; its user needs Read and Describe on the topic (no consumer group).

    python -m examples.call_table --bootstrap-servers 127.0.0.1:9092 --db calls.sqlite
    python -m examples.call_table --env-file kafka.env --db postgresql://user@host/db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from connector import admin, clients
from connector.errors import ConnectorError
from connector.manifests import read_env_files
from connector.settings import Settings
from examples import call_views

TOPIC: Final = "nxcloud.voice.call-events"
# Each day's reconciliation (one record per day, service and country), when the topic exists.
RECONCILIATION: Final = "nxcloud.voice.reconciliation"
RECONCILIATION_V1: Final = "urn:nxcloud-connector:schema:reconciliation:v1."
# The schema this consumer was written for: any v1 revision (v1 only grows).
SCHEMA_V1: Final = "urn:nxcloud-connector:schema:call-event:v1."
TABLES: Final = """
CREATE TABLE IF NOT EXISTS calls (
    call_id    TEXT PRIMARY KEY,
    updated_at TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    event      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reconciliation (
    day          TEXT NOT NULL,
    service      TEXT NOT NULL,
    country_code TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    status       TEXT NOT NULL,
    record       TEXT NOT NULL,
    PRIMARY KEY (day, service, country_code)
);
CREATE TABLE IF NOT EXISTS positions (
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    next       INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""
UPSERT: Final = """
INSERT INTO calls (call_id, updated_at, revision, event_id, event) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    updated_at = excluded.updated_at, revision = excluded.revision,
    event_id = excluded.event_id, event = excluded.event
WHERE (excluded.updated_at, excluded.revision) > (calls.updated_at, calls.revision)
"""
RECONCILE: Final = """
INSERT INTO reconciliation (day, service, country_code, updated_at, status, record)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (day, service, country_code) DO UPDATE SET
    updated_at = excluded.updated_at, status = excluded.status, record = excluded.record
WHERE excluded.updated_at > reconciliation.updated_at
"""
REMEMBER: Final = """
INSERT INTO positions (topic, partition, next) VALUES (?, ?, ?)
ON CONFLICT (topic, partition) DO UPDATE SET next = excluded.next
"""


class WrongSchema(Exception):
    """An event of a schema this consumer was not written for (a v2 on the v1 topic)."""


@dataclass
class Summary:
    read: int = 0
    changed: int = 0


@dataclass
class Table:
    """The calls and positions tables, in SQLite or PostgreSQL (psycopg 3)."""

    db: Any
    postgres: bool = False

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.postgres:  # psycopg's placeholders are %s
            return self.db.execute(sql.replace("?", "%s") if params else sql, params or None)
        return self.db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction() if self.postgres else self.db:
            yield

    def close(self) -> None:
        self.db.close()


def open_table(target: Path | str) -> Table:
    """A SQLite file, or a PostgreSQL database named by its URL (postgresql://...)."""
    if str(target).startswith(("postgresql://", "postgres://")):
        import psycopg

        table = Table(psycopg.connect(str(target), autocommit=True), postgres=True)
        with table.transaction():
            for statement in call_views.POSTGRES:
                table.execute(statement)
        return table
    db = sqlite3.connect(target)
    db.executescript(TABLES)
    return Table(db)


def sortable(moment: str) -> str:
    """RFC 3339 as fixed-width UTC text, so that the table compares times as text."""
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(UTC)
    return parsed.isoformat(timespec="microseconds")


def apply(db: Table | sqlite3.Connection, headers: dict[str, bytes], value: bytes) -> bool:
    """Store the event if it is newer than the call's row; True when the row changed."""
    schema = headers.get("ce_dataschema", b"").decode()
    if not schema.startswith(SCHEMA_V1):
        raise WrongSchema(f"ce_dataschema {schema!r} is not call-event v1")
    value = payload(value)
    event: dict[str, Any] = json.loads(value)
    row = (event["call_id"], sortable(event["updated_at"]), event["revision"],
           event["event_id"], value.decode())  # fmt: skip
    table = db if isinstance(db, Table) else Table(db)
    return bool(table.execute(call_views.UPSERT if table.postgres else UPSERT, row).rowcount == 1)


def apply_reconciliation(db: Table, headers: dict[str, bytes], value: bytes) -> bool:
    """Store a day's figures if they are newer than the row's (`updated_at`): a repeat or
    an older record, read again, changes nothing. True when the row changed."""
    schema = headers.get("ce_dataschema", b"").decode()
    if not schema.startswith(RECONCILIATION_V1):
        raise WrongSchema(f"ce_dataschema {schema!r} is not reconciliation v1")
    value = payload(value)
    record: dict[str, Any] = json.loads(value)
    row = (record["day"], record["service"], record["country_code"],
           sortable(record["updated_at"]), record["status"], value.decode())  # fmt: skip
    upsert = call_views.RECONCILE if db.postgres else RECONCILE
    return bool(db.execute(upsert, row).rowcount == 1)


def payload(value: bytes) -> bytes:
    """The JSON of a value, plain or in the schema registry's wire format (byte 0, the
    schema id in 4 bytes, then the JSON: NXCLOUD_REGISTRY_WIRE_FORMAT)."""
    return value[5:] if value[:1] == b"\x00" else value


def rows(db: Table) -> dict[str, tuple[int, str, dict[str, Any]]]:
    """Every call's revision, event_id and event."""
    found = db.execute("SELECT call_id, revision, event_id, event FROM calls").fetchall()
    return {call: (revision, event_id, event if isinstance(event, dict) else json.loads(event))
            for call, revision, event_id, event in found}  # fmt: skip


def positions(db: Table, topic: str) -> dict[int, int]:
    found = db.execute("SELECT partition, next FROM positions WHERE topic = ?", (topic,))
    return dict(found.fetchall())


def apply_batch(
    db: Table,
    batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    reconciliation: str | None = None,
) -> Summary:
    """One transaction: the batch's rows and the offsets after it."""
    summary = Summary()
    with db.transaction():
        for tp, records in batches.items():
            for record in records:
                summary.read += 1
                # The connector writes no tombstones; a record without a value is skipped.
                if record.value is None:
                    continue
                if tp.topic == reconciliation:
                    summary.changed += apply_reconciliation(db, dict(record.headers),
                                                            record.value)  # fmt: skip
                else:
                    summary.changed += apply(db, dict(record.headers), record.value)
            if records:
                db.execute(REMEMBER, (tp.topic, tp.partition, records[-1].offset + 1))
    return summary


def kafka(reach: str | Settings) -> Settings:
    """The settings to reach Kafka with: as given, or PLAINTEXT to bootstrap servers."""
    return reach if isinstance(reach, Settings) else Settings(kafka_bootstrap_servers=reach)


async def follow(
    reach: str | Settings,
    db: Table,
    topic: str = TOPIC,
    *,
    from_beginning: bool = False,
    stop_at_end: bool = False,
    reconciliation: str | None = RECONCILIATION,
) -> Summary:
    """Read `topic` into the table from where the table stopped (or from the beginning);
    with `stop_at_end`, return once the end offsets of the start are reached. The
    `reconciliation` topic goes to its own table, when it exists. `reach`: the connector's
    settings (every Kafka client option from connector.clients), or bootstrap servers on
    PLAINTEXT."""
    settings = kafka(reach)
    consumer = AIOKafkaConsumer(
        **clients.options(settings, client_id="nxcloud-call-table"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    total = Summary()
    try:
        partitions = await partitions_of(settings, topic)
        if reconciliation is not None:
            try:
                partitions += await partitions_of(settings, reconciliation)
            except (UnknownTopicOrPartitionError, TopicAuthorizationFailedError):
                reconciliation = None  # no such topic (or not for this user): the calls only
        consumer.assign(partitions)
        for tp in partitions:
            stored = {} if from_beginning else positions(db, tp.topic)
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        ends = await consumer.end_offsets(partitions) if stop_at_end else {}
        while not stop_at_end or not await _reached(consumer, ends):
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            batch = apply_batch(db, batches, reconciliation)
            total.read += batch.read
            total.changed += batch.changed
    finally:
        await consumer.stop()
    return total


async def partitions_of(reach: str | Settings, topic: str) -> list[TopicPartition]:
    async with admin.admin_client(kafka(reach)) as client:
        (described,) = await client.describe_topics([topic])
    if described["error_code"]:  # not there, or not for this user: as Kafka says it
        raise for_code(described["error_code"])(topic)
    return [TopicPartition(topic, p["partition"])
            for p in sorted(described["partitions"], key=lambda p: p["partition"])]  # fmt: skip


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.call_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        action="append",
        default=[],
        help="read the KAFKA_* settings from this KEY=VALUE file instead of the environment; "
        "repeat it to layer files (a later one wins)",
    )
    parser.add_argument("--bootstrap-servers", help="instead of KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument(
        "--reconciliation-topic", default=RECONCILIATION,
        help="each day's reconciliation, into its own table (when the topic exists)",
    )  # fmt: skip
    parser.add_argument(
        "--db", default="calls.sqlite", help="a SQLite file, or postgresql://USER@HOST/DB"
    )
    parser.add_argument("--from-beginning", action="store_true", help="ignore stored offsets")
    parser.add_argument("--stop-at-end", action="store_true", help="stop once caught up")
    args = parser.parse_args()
    try:
        environ = read_env_files(args.env_file) if args.env_file else dict(os.environ)
        if args.bootstrap_servers:
            environ["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap_servers
        settings = Settings.from_env(environ)
    except (ConnectorError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    db = open_table(args.db)
    try:
        with clients.refusals(settings):  # a refused login or ACL in one line
            summary = asyncio.run(follow(settings, db, args.topic,
                                         from_beginning=args.from_beginning,
                                         stop_at_end=args.stop_at_end,
                                         reconciliation=args.reconciliation_topic))  # fmt: skip
    except KeyboardInterrupt:
        return
    except ConnectorError as exc:
        parser.exit(exc.exit_code, f"{parser.prog}: {exc}\n")
    finally:
        db.close()
    print(f"read {summary.read} events, changed {summary.changed} rows")


if __name__ == "__main__":
    main()
