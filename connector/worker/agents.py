"""The Faust worker: wires normalize and merge to topics and a table; no logic of its own.

One agent reads both raw topics (and the observations `replay` hands over). They are keyed
alike (`connector.identity`) and co-partitioned, so one call's DR and CDR rows reach the same
worker. Each batch is normalized and merged with the calls' state in a table; the events
are written first and the state after, so a state never claims an event Kafka lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, cast

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.types import EventT, RecordMetadata

from connector import clients, codec, deadletters, envelope, registry, wire
from connector.clock import utcnow
from connector.errors import KafkaAccessError, Unusable
from connector.identity import call_key, partition_of
from connector.merge import CallState, expired, merge_batch, missing
from connector.records import group_id, observe
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import heartbeat, telemetry
from connector.worker.consumer import SCHEME
from connector.worker.recovery import Tables
from connector.worker.table import CallTable

log = logging.getLogger(__name__)
EXIT_REFUSED: Final = KafkaAccessError.exit_code

# A batch shares one wait for Kafka's acknowledgement; a quiet stream waits at most this.
BATCH: Final = 1000
BATCH_WITHIN_SECONDS: Final = 0.02
MIB = 1024 * 1024
RESTORE_FETCH_BYTES: Final = 8 * MIB  # per partition and fetch (Faust's default: 1 MiB)
RESTORE_WRITE_BATCH: Final = 10_000  # changelog records per store write (Faust's: 1,000)
STANDBY_WRITE_BATCH: Final = 1000  # a standby's (Faust's): its last records wait for a batch
# Faust's RocksDB defaults (per partition: 3 x 64 MiB memtables, a 2 GiB block cache) let
# the worker's memory grow with its state; these keep it bounded (bench/worker.py).
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 8 * MIB,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * MIB,
    "block_cache_compressed_size": 4 * MIB,
}


def batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    return cast(faust.Stream[bytes], stream).take_events(BATCH, within=BATCH_WITHIN_SECONDS)


def exit_if_refused(exc: BaseException, settings: Settings) -> None:
    """Kafka refuses the worker (an ACL, a login): say so in one line and exit at once, as
    a crash would, so nothing of the batch in hand is committed; a restart tries again."""
    refusal = clients.explain(exc, settings)
    if refusal is not None:
        log.critical("kafka refuses the worker, exiting: %s", refusal)
        logging.shutdown()
        os._exit(EXIT_REFUSED)


async def scan(
    items: Iterable[tuple[bytes, bytes]],
    owned: set[int],
    partitions: int,
    *,
    now: datetime,
    horizon: timedelta,
    dr_grace: timedelta,
) -> tuple[list[tuple[bytes, int]], telemetry.Census]:
    """The calls past the horizon on the partitions owned, and the census of the others."""
    stale, census = [], Tally[str]()
    for number, (key, value) in enumerate(items):
        state = codec.decode_state(value)
        partition = partition_of(call_key(state.message_id, state.phone_raw), partitions)
        if partition in owned:
            if expired(state, now, horizon):
                stale.append((key, partition))
            else:
                census["calls"] += 1
                census[missing(state, now, dr_grace) or "complete"] += 1
        if number % 1000 == 0:
            await asyncio.sleep(0)  # a million calls take seconds: let the agents run
    return stale, telemetry.Census(census["calls"], census["dr"], census["cdr"])


def framer(
    settings: Settings, names: TopicNames
) -> Callable[[str, bytes], Awaitable[bytes]] | None:
    """How a value leaves: None for plain JSON (nothing more per record), or a function
    that frames it with its schema's registry id (NXCLOUD_REGISTRY_WIRE_FORMAT), waiting
    for the registry while it cannot give the id. A reason left by an earlier run goes."""
    ids, not_ready = registry.ids(settings, names), settings.worker_data_dir / heartbeat.NOT_READY
    not_ready.unlink(missing_ok=True)
    if ids is None:
        return None

    async def framed(topic: str, value: bytes) -> bytes:
        schema_id = ids.known(topic)
        if schema_id is None:
            schema_id = await registry.patiently(lambda: ids.of(topic), asyncio.sleep, not_ready)
        return wire.frame(schema_id, value)

    return framed


def new_app(settings: Settings) -> faust.App:
    """The Faust app, configured; its transport (by the URL scheme) has our consumer."""
    app = faust.App(
        group_id(settings),
        broker=[f"{SCHEME}://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=clients.broker_credentials(settings),
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
        broker_session_timeout=float(settings.worker_session_timeout_seconds),
        broker_request_timeout=max(90.0, settings.worker_session_timeout_seconds + 30.0),
        broker_heartbeat_interval=1.0,
        # Static membership: a restarted worker with the same id takes its partitions
        # back without a rebalance while its session lasts (docs/kubernetes.md).
        consumer_group_instance_id=settings.worker_instance_id or None,
        table_standby_replicas=settings.worker_standby_replicas,
        # The restore: bigger fetches, changelog records taken in chunks (recovery.py).
        consumer_max_fetch_size=RESTORE_FETCH_BYTES,
        TableManager=Tables,
        key_serializer="raw",
        value_serializer="raw",
    )
    # A large restore reads the changelog with a consumer of its own (recovery.py).
    cast(Tables, app.tables).reader_options = lambda: clients.options(settings)
    return app


def create_app(
    settings: Settings,
    names: TopicNames | None = None,
    metrics: telemetry.WorkerMetrics | None = None,
) -> faust.App:
    names = names or TopicNames.of(settings)
    app = new_app(settings)
    raw = "raw"
    sources = app.topic(
        names.dr_raw, names.cdr_raw, names.observations, key_serializer=raw, value_serializer=raw
    )
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
        recovery_buffer_size=RESTORE_WRITE_BATCH,
        standby_buffer_size=STANDBY_WRITE_BATCH,
        options=ROCKSDB_OPTIONS if settings.worker_store.startswith("rocksdb") else None,
    )
    app.tables.add(table)
    horizon, partitions = timedelta(days=settings.worker_state_days), settings.topic_partitions
    dr_grace = timedelta(seconds=settings.worker_dr_grace_seconds)
    producer, framed = app.producer, framer(settings, names)
    ce_source = envelope.source(settings)

    def stored(call_id: str) -> CallState | None:
        value = table.get(call_id.encode())
        return codec.decode_state(value) if value else None

    async def publish(event: dict[str, Any]) -> Awaitable[RecordMetadata]:
        key, value = event["call_id"].encode(), orjson.dumps(event)
        # Plain JSON as ever, unless the wire format is on.
        return await producer.send(names.call_events, key, value if framed is None else
                                   await framed(names.call_events, value), None, None,
                                   envelope.headers(event, ce_source))  # fmt: skip

    async def reject(record: EventT[bytes], reason: str) -> Awaitable[RecordMetadata]:
        message = record.message
        letter = deadletters.unusable_record(reason, message.topic, message.partition,
                                             message.offset, record.value)  # fmt: skip
        if metrics is not None:
            metrics.dead_letter(reason)
        return await producer.send(names.dead_letter, None, letter if framed is None else
                                   await framed(names.dead_letter, letter), None, None,
                                   None)  # fmt: skip

    @app.agent(sources)
    async def merge_calls(stream: faust.StreamT[bytes]) -> None:
        try:
            async for records in batches(stream):
                started = time.perf_counter()
                observed, deliveries = [], []
                for record in records:
                    try:
                        observed.append((record, *observe(record.message.topic, record.value,
                                                          names, settings)))  # fmt: skip
                    except Unusable as exc:
                        deliveries.append(await reject(record, str(exc)))
                batch = merge_batch(observed, stored)
                deliveries += [await publish(event) for event in batch.events]
                # The events first: a state saying "emitted" must never outlive a lost event.
                await asyncio.gather(*deliveries)
                for call_id, (record, state) in batch.changed.items():
                    table.put(record, call_id.encode(), codec.encode_state(state))
                if metrics is not None:
                    metrics.batch(records, len(batch.events), len(observed), started)
        except KafkaError as exc:
            exit_if_refused(exc, settings)
            raise

    beat_file = settings.worker_data_dir / heartbeat.FILE_NAME

    @app.timer(interval=heartbeat.INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def beat() -> None:
        # The Kubernetes probes read this file's age: the event loop still runs.
        heartbeat.beat(beat_file)

    @app.timer(interval=float(settings.worker_expiry_interval_seconds))  # type: ignore[untyped-decorator]
    async def forget_old_calls() -> None:
        """Forget the calls past the horizon on the partitions this worker owns (a standby
        copy may lag behind its owner's latest change)."""
        owned = {tp.partition for tp in app.assignor.assigned_actives()
                 if tp.topic == table.changelog_topic_name}  # fmt: skip
        stale, census = await scan(
            table.items(), owned, partitions, now=utcnow(), horizon=horizon, dr_grace=dr_grace
        )
        for key, partition in stale:
            table.forget(key, partition)
        if stale:
            log.info("forgot calls past the state horizon", extra={"calls": len(stale)})
        if metrics is not None:
            metrics.census(census)

    if metrics is not None:
        telemetry.install(app, metrics, (names.dr_raw, names.cdr_raw, names.observations))

    return app
