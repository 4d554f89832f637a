"""A Faust agent that does nothing, built like the worker: the worker's ceiling under Faust.

The app is the worker's own (`connector.worker.agents.new_app`: its options, its
transport and consumer), with its monitor (`connector.worker.telemetry`'s) and its event
loop (uvloop), under an app id (consumer group) of its own. The agent reads the three
source topics in batches as the worker does and writes one record a record read to the
call-event topic (or BENCH_NOOP_OUTPUT) through Faust's producer, waiting for Kafka's
acknowledgements once a batch. Run by `bench/worker.py`: `python -m bench.noop_agent` (the
settings from the environment, as the worker takes them; logs "Ready" as Faust's worker
does).
"""

from __future__ import annotations

import asyncio
import os

import faust
import uvloop

from connector import logs
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker.agents import batches, new_app
from connector.worker.telemetry import Monitor


def group(settings: Settings) -> str:
    return f"bench-noop.{settings.topic_suffix}" if settings.topic_suffix else "bench-noop"


def create_app(settings: Settings) -> faust.App:
    names = TopicNames.of(settings)
    output = os.environ.get("BENCH_NOOP_OUTPUT") or names.call_events
    app = new_app(settings, Monitor(), group(settings))
    sources = app.topic(
        names.dr_raw, names.cdr_raw, names.observations, key_serializer="raw",
        value_serializer="raw",
    )  # fmt: skip
    producer = app.producer

    @app.agent(sources)
    async def pass_on(stream: faust.StreamT[bytes]) -> None:
        async for records in batches(stream):
            deliveries = [
                await producer.send(output, record.key, record.value, None, None, None)
                for record in records
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
