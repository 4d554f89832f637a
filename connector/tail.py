"""`nxcloud-connector tail`: the call-event stream for people. On a terminal one line per
event; JSON lines when piped or asked for."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from connector import admin, clients, wire
from connector.errors import ConnectorError, OutputClosed
from connector.settings import Settings

Event = dict[str, Any]
COLUMNS: Final = (
    ("time (UTC)", 20), ("service", 13), ("phone", 17), ("connected", 10), ("duration", 9),
    ("cost", 22), ("sources", 8), ("rev", 4),
)  # fmt: skip


@dataclass(frozen=True)
class Wanted:
    """The events a support engineer asks for: by call, by message, by phone (any form with
    the country code: `+8615088888888`, `8615088888888`, `+86 150 8888 8888`)."""

    call_id: str | None = None
    message_id: str | None = None
    phone: str | None = None

    def __call__(self, event: Event) -> bool:
        return (
            (self.call_id is None or event.get("call_id") == self.call_id)
            and (self.message_id is None or event.get("message_id") == self.message_id)
            and (self.phone is None or _digits(event.get("phone")) == _digits(self.phone))
        )


def matcher(
    call_id: str | None, message_id: str | None, phone: str | None = None
) -> Callable[[Event], bool]:
    return Wanted(call_id, message_id, phone)


def _digits(phone: object) -> str:
    return "".join(c for c in phone if c.isdigit()) if isinstance(phone, str) else ""


def header() -> str:
    return "  ".join(name.ljust(width) for name, width in COLUMNS).rstrip()


def line(event: Event) -> str:
    """One event as one line: when, which service and phone, how it went, what it cost and
    whether that cost is final, which reports it is made of, and its revision."""
    billing = event.get("billing") or {}
    cost, duration, connected = (
        billing.get("cost"),
        event.get("duration_seconds"),
        event.get("connected"),
    )
    cells = (
        _when(event),
        str(event.get("service") or "-"),
        str(event.get("phone") or "-"),
        "unknown" if connected is None else "yes" if connected else "no",
        "-" if duration is None else f"{duration} s",
        "-" if cost is None else f"{cost} {_finality(billing)}",
        "+".join(event.get("sources") or ()) or "-",
        f"r{event.get('revision', '?')}",
    )
    padded = (cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
    return "  ".join(padded).rstrip()


def _finality(billing: dict[str, Any]) -> str:
    return "final" if billing.get("cost_final") else "provisional"


def _when(event: Event) -> str:
    for name in ("started_at", "connected_at", "ended_at", "first_seen_at"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value.replace("T", " ")
    return "-"


def render(event: Event, *, as_json: bool) -> str:
    return orjson.dumps(event).decode() if as_json else line(event)


async def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    wanted: Callable[[Event], bool],
    out: TextIO = sys.stdout,
    limit: int | None = None,
    as_json: bool | None = None,
) -> int:
    """Print matching events until interrupted, or until exactly `limit` are printed; JSON
    lines unless `out` is a terminal (`as_json` decides when given). Returns how many."""
    as_json = not out.isatty() if as_json is None else as_json
    consumer = AIOKafkaConsumer(**clients.options(settings, enable_auto_commit=False))
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
        if not as_json:
            _write(out, header())
        while limit is None or printed < limit:
            batches = await consumer.getmany(timeout_ms=1000)
            for record in (record for records in batches.values() for record in records):
                try:
                    event = orjson.loads(wire.payload(record.value or b""))
                except ValueError:  # orjson.JSONDecodeError is one
                    continue
                if isinstance(event, dict) and wanted(event):
                    _write(out, render(event, as_json=as_json))
                    printed += 1
                    if printed == limit:
                        return printed
    return printed


def _write(out: TextIO, text: str) -> None:
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError as closed:
        raise OutputClosed("the output was closed") from closed
