"""Reading what landed on a topic, with a deadline instead of a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from starlette.applications import Starlette

from connector import clients
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.settings import Settings


def json_value(record: ConsumerRecord[bytes, bytes]) -> Any:
    return None if record.value is None else orjson.loads(record.value)


def tombstone_key(record: ConsumerRecord[bytes, bytes]) -> bytes | None:
    return record.key if record.value is None else None


async def read_topic(
    bootstrap: str | Settings,
    topic: str,
    until: Callable[[list[Any]], bool],
    deadline: float = 30.0,
    pick: Callable[[ConsumerRecord[bytes, bytes]], Any] = json_value,
) -> list[Any]:
    """`pick` of each record of `topic` from the start (decoded JSON values, skipping
    tombstones, unless told otherwise; None is skipped), once `until(picked)` holds."""
    reach = (
        clients.options(bootstrap)
        if isinstance(bootstrap, Settings)
        else {"bootstrap_servers": bootstrap}
    )
    consumer = AIOKafkaConsumer(
        topic,
        **reach,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    values: list[Any] = []
    try:
        async with asyncio.timeout(deadline):
            while not until(values):
                batches = await consumer.getmany(timeout_ms=200)
                for messages in batches.values():
                    picked = (pick(message) for message in messages)
                    values.extend(value for value in picked if value is not None)
    except TimeoutError:
        raise AssertionError(
            f"{topic}: condition not met within {deadline} s; got {len(values)} records"
        ) from None
    finally:
        await consumer.stop()
    return values


@asynccontextmanager
async def serving(
    app: Starlette, http: type[asyncio.Protocol] | None = None, keep_alive: int = 5
) -> AsyncIterator[str]:
    """Serve `app` over real HTTP on a free loopback port; yields the base URL. A receiver
    app is served with its protocol (`connector.receiver.app.edge`), as in production."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http or "auto",
        log_level="warning",
        proxy_headers=False,
        lifespan="on",
        timeout_keep_alive=keep_alive,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("server stopped during start-up")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def start_local_kafka(data_dir: Path) -> LocalKafka:
    config = BrokerConfig(data_dir=data_dir, port=free_port(), controller_port=free_port())
    return LocalKafka(config)
