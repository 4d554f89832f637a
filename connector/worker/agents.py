"""The Faust worker: wiring only. Faust keeps what it is good at (the agent over the
co-partitioned source topics, the consumer group, the commits); the calls' state is the
worker's own (`store`, caught up by `restore`), and a batch's path is `pipeline`'s.

One agent reads both raw topics (and the observations `replay` hands over). They are keyed
alike (`connector.identity`) and co-partitioned, so one call's DR and CDR rows reach the same
worker and the same store partition.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Final, cast

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.types import TP, EventT

from connector import clients, groups
from connector.clock import utcnow
from connector.errors import ConnectorError, KafkaAccessError
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import heartbeat, telemetry
from connector.worker.consumer import SCHEME
from connector.worker.output import Output
from connector.worker.pipeline import Pipeline
from connector.worker.restore import Restorer
from connector.worker.store import Store

log = logging.getLogger(__name__)
EXIT_REFUSED: Final = KafkaAccessError.exit_code
EXIT_FAILED: Final = ConnectorError.exit_code
RETRY_SECONDS: Final = 1.0

# A batch shares one wait for Kafka's acknowledgement; a quiet stream waits at most this.
BATCH: Final = 1000
BATCH_WITHIN_SECONDS: Final = 0.02


def batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    return cast(faust.Stream[bytes], stream).take_events(BATCH, within=BATCH_WITHIN_SECONDS)


async def merged(pipeline: Pipeline, records: Sequence[EventT[bytes]]) -> None:
    """The batch merged, tried again while Kafka fails it for a time (a leader moving, a
    broker down): from the store, which holds none of what failed, the retry makes the
    same events and changes, so what went out before the failure repeats exactly."""
    while True:
        try:
            await pipeline.merge(records)
            return
        except KafkaError as exc:
            if not passing(exc, pipeline.settings):
                raise
            log.warning("a batch failed on Kafka, trying it again",
                        extra={"error": repr(exc), "retry_seconds": RETRY_SECONDS})  # fmt: skip
            await asyncio.sleep(RETRY_SECONDS)
            await pipeline.output.restart()


def passing(exc: KafkaError, settings: Settings) -> bool:
    """A failure that time may end: not a refusal (an ACL, a login), not one Kafka calls
    final (a record too large, say)."""
    if clients.explain(exc, settings) is not None:
        return False
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


def exit_failed(exc: BaseException, settings: Settings) -> None:
    """The batch in hand cannot be merged: exit at once, as a crash would, so nothing of
    it is committed (Faust would restart the agent and commit past it); a restart tries
    again. Kafka refusing the worker (an ACL, a login) is said in one line."""
    exit_if_refused(exc, settings)
    log.critical("the worker failed on a batch, exiting", exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_FAILED)


def exit_if_refused(exc: BaseException, settings: Settings) -> None:
    """Kafka refuses the worker (an ACL, a login): say so in one line and exit at once, as
    a crash would, so nothing of the batch in hand is committed; a restart tries again."""
    refusal = clients.explain(exc, settings)
    if refusal is not None:
        log.critical("kafka refuses the worker, exiting: %s", refusal)
        logging.shutdown()
        os._exit(EXIT_REFUSED)


def new_app(
    settings: Settings, monitor: faust.Monitor | None = None, app_id: str | None = None
) -> faust.App:
    """The Faust app, configured; its transport (by the URL scheme) has our consumer.
    `app_id` (the consumer group) is the worker's unless given (bench/noop_agent.py)."""
    return faust.App(
        app_id or groups.worker(settings),
        monitor=monitor,
        broker=[f"{SCHEME}://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=clients.broker_credentials(settings),
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
        key_serializer="raw",
        value_serializer="raw",
    )


def create_app(
    settings: Settings,
    names: TopicNames | None = None,
    metrics: telemetry.WorkerMetrics | None = None,
) -> faust.App:
    names = names or TopicNames.of(settings)
    app = new_app(settings, telemetry.Monitor(metrics))
    raw = "raw"
    sources = app.topic(
        names.dr_raw, names.cdr_raw, names.observations, key_serializer=raw, value_serializer=raw
    )
    changelog = app.topic(
        changelog_topic(settings), partitions=settings.topic_partitions, compacting=True,
        deleting=False, key_serializer=raw, value_serializer=raw,
    )  # fmt: skip
    store = Store(settings.worker_store, settings.worker_data_dir / "calls")
    restorer = Restorer(
        store, changelog.get_topic_name(), options=lambda: clients.options(settings),
        declare=changelog.maybe_declare, lock=asyncio.Lock(),
        not_ready=settings.worker_data_dir / heartbeat.NOT_READY,
        restored=metrics.restored_from_changelog if metrics is not None else _ignore,
    )  # fmt: skip
    output = Output(settings, names, changelog.get_topic_name())
    pipeline = Pipeline(settings, names, store, restorer, output=output, metrics=metrics)

    @app.agent(sources)
    async def merge_calls(stream: faust.StreamT[bytes]) -> None:
        try:
            await output.start()
            async for records in batches(stream):
                await merged(pipeline, records)
        except Exception as exc:
            exit_failed(exc, settings)
        finally:
            await output.stop()

    @app.on_partitions_assigned.connect
    def catch_up(_app: Any, /, *args: Any, signal: Any, **_: Any) -> Awaitable[None]:
        assigned: set[TP] = args[0]
        return restorer.assign({tp.partition for tp in assigned if tp.topic in sources.topics})

    beat_file = settings.worker_data_dir / heartbeat.FILE_NAME

    @app.timer(interval=heartbeat.INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def beat() -> None:
        # The Kubernetes probes read this file's age: the event loop still runs.
        heartbeat.beat(beat_file)

    @app.timer(interval=float(settings.worker_expiry_interval_seconds))  # type: ignore[untyped-decorator]
    async def forget_old_calls() -> None:
        try:
            await pipeline.expire(utcnow())
        except KafkaError as exc:  # nothing left the store: the next round tries again
            log.warning("forgetting old calls failed", extra={"error": repr(exc)})

    if metrics is not None:
        telemetry.install(app, metrics, sources.topics)

    return app


def changelog_topic(settings: Settings) -> str:
    """The call store's changelog: the name Faust gave the table it replaces, so a worker
    upgraded in place restores from what the older one wrote."""
    return f"{groups.worker(settings)}-calls-changelog"


def _ignore(records: int, seconds: float) -> None:
    return None
