"""A Faust agent that does nothing, built like the worker: the worker's ceiling under Faust.

The app has the options of the worker's (`connector.worker.agents.new_app`, copied here so
that this stays while the worker changes), its monitor (`connector.worker.telemetry`'s),
its transport (the broker URL scheme the project registers for Faust, when it is
installed) and its event loop (uvloop). The agent reads the three source topics in batches
as the worker does and writes one record a record read to the call-event topic (or
BENCH_NOOP_OUTPUT) through Faust's producer, waiting for Kafka's acknowledgements once a
batch. Run by `bench/worker.py`: `python -m bench.noop_agent` (the settings from the
environment, as the worker takes them; logs "Ready" as Faust's worker does).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Final, cast

import faust
import uvloop
from faust.types import EventT

from connector import clients, logs
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker.telemetry import Monitor

# The worker's (connector/worker/agents.py): a batch shares one wait for the acknowledgements.
BATCH: Final = 1000
BATCH_WITHIN_SECONDS: Final = 0.02
TRANSPORT: Final = "nxcloud-kafka"  # the worker's consumer (pyproject.toml's faust.transports)


def group(settings: Settings) -> str:
    return f"bench-noop.{settings.topic_suffix}" if settings.topic_suffix else "bench-noop"


def transport() -> str:
    """The worker's transport when the project registers it, else Faust's own."""
    found = {entry.name for entry in entry_points(group="faust.transports")}
    return TRANSPORT if TRANSPORT in found else "kafka"


def new_app(settings: Settings) -> faust.App:
    """The worker's app options."""
    scheme = transport()
    return faust.App(
        group(settings),
        monitor=Monitor(),  # the worker's own, lighter than Faust's (no metrics here)
        broker=[f"{scheme}://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
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
        consumer_group_instance_id=settings.worker_instance_id or None,
        key_serializer="raw",
        value_serializer="raw",
    )


def create_app(settings: Settings) -> faust.App:
    names = TopicNames.of(settings)
    output = os.environ.get("BENCH_NOOP_OUTPUT") or names.call_events
    app = new_app(settings)
    sources = app.topic(
        names.dr_raw, names.cdr_raw, names.observations, key_serializer="raw",
        value_serializer="raw",
    )  # fmt: skip
    producer = app.producer

    @app.agent(sources)
    async def pass_on(stream: faust.StreamT[bytes]) -> None:
        events = cast(faust.Stream[bytes], stream).take_events(BATCH, within=BATCH_WITHIN_SECONDS)
        async for records in events:
            batch = cast(Sequence[EventT[bytes]], records)
            deliveries = [
                await producer.send(output, record.key, record.value, None, None, None)
                for record in batch
            ]
            await asyncio.gather(*deliveries)

    return app


def main() -> None:
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(
        create_app(settings), loglevel=settings.log_level, quiet=True, override_logging=False,
        redirect_stdouts=False,
    )  # fmt: skip
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
