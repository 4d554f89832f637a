"""The Faust worker: wires normalize and merge to topics and a table; no logic of its own.

Both raw streams are normalized and re-keyed by call_id onto `nxcloud.voice.calls-by-id`,
so one call's DR and CDR meet in one worker whatever the partition counts; the merge agent
keeps each call's state in a table and emits a revision only when the call changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Final

import faust
import orjson

from connector import codec, heartbeat, normalize
from connector.clock import utcnow
from connector.merge import expired, merge
from connector.settings import Settings
from connector.table import CallTable
from connector.topics import TopicNames

log = logging.getLogger(__name__)

CE_SOURCE = "nxcloud-connector/worker"
CE_TYPE = "com.nxcloud.voice.call.v1"
MIB = 1024 * 1024
# Faust's RocksDB defaults (per partition: 3 x 64 MiB memtables, a 2 GiB block cache) let
# the worker's memory grow with its state; these keep it bounded (bench/worker.py).
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 8 * MIB,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * MIB,
    "block_cache_compressed_size": 4 * MIB,
}


def cloudevent_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event["event_id"].encode()),
        ("ce_source", CE_SOURCE.encode()),
        ("ce_type", CE_TYPE.encode()),
        ("ce_subject", event["call_id"].encode()),
        ("ce_time", event["updated_at"].encode()),
        ("content-type", b"application/json"),
    ]


def observe(
    topic: str, value: bytes, names: TopicNames, settings: Settings
) -> tuple[normalize.Observation, datetime]:
    """A raw record as an observation and the time it was observed; raises Unusable."""
    try:
        record = orjson.loads(value)
        if topic == names.dr_raw:
            seen_at = datetime.fromisoformat(record["received_at"])
            return normalize.from_dr(record["fields"], settings.nxcloud_timezone), seen_at
        seen_at = datetime.fromisoformat(record["fetched_at"])
        row, service = record["row"], int(record["query"]["service"])
        return normalize.from_cdr(row, service, settings.nxcloud_timezone), seen_at
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, normalize.Unusable):
            raise
        raise normalize.Unusable(f"not a raw record: {type(exc).__name__}: {exc}") from None


def dead_letter(reason: str, topic: str, partition: int, offset: int, value: bytes) -> bytes:
    return orjson.dumps(
        {
            "source": "worker",
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "value": value.decode("utf-8", errors="replace"),
        }
    )


def group_id(settings: Settings) -> str:
    """The Faust app id: also the consumer group whose commits say what was merged."""
    return f"nxcloud-worker.{settings.topic_suffix}" if settings.topic_suffix else "nxcloud-worker"


def create_app(settings: Settings, names: TopicNames | None = None) -> faust.App:
    names = names or TopicNames.of(settings)
    app = faust.App(
        group_id(settings),
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store=settings.worker_store,
        datadir=str(settings.worker_data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        web_enabled=False,
        processing_guarantee="at_least_once",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw = "raw"
    sources = app.topic(names.dr_raw, names.cdr_raw, key_serializer=raw, value_serializer=raw)
    calls = app.topic(
        names.calls_by_id,
        partitions=settings.topic_partitions,
        key_serializer=raw,
        value_serializer=raw,
    )
    events = app.topic(names.call_events, key_serializer=raw, value_serializer=raw)
    dead = app.topic(names.dead_letter, key_serializer=raw, value_serializer=raw)
    # key_type/value_type bytes make the changelog raw; without them faust reads it back
    # as JSON during recovery, fails on every record and never finishes recovering.
    table = CallTable(
        app,
        name="calls",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
        options=ROCKSDB_OPTIONS if settings.worker_store.startswith("rocksdb") else None,
    )
    app.tables.add(table)
    horizon = timedelta(days=settings.worker_state_days)

    @app.agent(sources)
    async def normalize_records(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for record in stream.events():
            message = record.message
            try:
                observation, seen_at = observe(message.topic, record.value, names, settings)
            except normalize.Unusable as exc:
                letter = dead_letter(str(exc), message.topic, message.partition,
                                     message.offset, record.value)  # fmt: skip
                await dead.send(value=letter)
                continue
            await calls.send(
                key=observation.call_id.encode(),
                value=codec.encode_observation(observation, seen_at),
            )
            yield None

    @app.agent(calls)
    async def merge_calls(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for key, value in stream.items():
            observation, seen_at = codec.decode_observation(value)
            stored = table.get(key)
            state = codec.decode_state(stored) if stored else None
            merged, event = merge(state, observation, seen_at)
            if event is not None:
                table[key] = codec.encode_state(merged)
                await events.send(
                    key=key, value=orjson.dumps(event), headers=cloudevent_headers(event)
                )
            yield None

    beat_file = settings.worker_data_dir / heartbeat.FILE_NAME

    @app.timer(interval=heartbeat.INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def beat() -> None:
        # The Kubernetes probes read this file's age: the event loop still runs.
        heartbeat.beat(beat_file)

    @app.timer(interval=3600.0)  # type: ignore[untyped-decorator]
    async def forget_old_calls() -> None:
        now, stale = utcnow(), []
        for number, (key, value) in enumerate(table.items()):
            if expired(codec.decode_state(value), now, horizon):
                stale.append(key)
            if number % 1000 == 0:
                await asyncio.sleep(0)  # a million calls take seconds: let the agents run
        for key in stale:
            del table[key]
        if stale:
            log.info("forgot calls past the state horizon", extra={"calls": len(stale)})

    return app
