"""`nxcloud-connector tail`: the call-event stream as JSON lines, for people."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from connector import admin, clients, wire
from connector.errors import ConnectorError
from connector.settings import Settings


def matcher(call_id: str | None, message_id: str | None) -> Callable[[dict[str, Any]], bool]:
    def wanted(event: dict[str, Any]) -> bool:
        return (call_id is None or event.get("call_id") == call_id) and (
            message_id is None or event.get("message_id") == message_id
        )

    return wanted


def render(event: dict[str, Any], *, pretty: bool) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(event, option=option).decode()


async def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    wanted: Callable[[dict[str, Any]], bool],
    out: TextIO = sys.stdout,
    limit: int | None = None,
) -> int:
    """Print matching events until interrupted (or `limit` printed); returns how many."""
    consumer = AIOKafkaConsumer(**clients.options(settings, enable_auto_commit=False))
    pretty = out.isatty()
    printed = 0
    async with admin.running(consumer):
        partitions = await admin.partitions_of(consumer, topic)
        if not partitions:
            raise ConnectorError(f"topic {topic} does not exist: run `nxcloud-connector topics`")
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        while limit is None or printed < limit:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    try:
                        event = orjson.loads(wire.payload(record.value or b""))
                    except ValueError:  # orjson.JSONDecodeError is one
                        continue
                    if wanted(event):
                        print(render(event, pretty=pretty), file=out, flush=True)
                        printed += 1
    return printed
