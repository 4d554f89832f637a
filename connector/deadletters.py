"""Every dead-letter record's shape, one function a source: a push the receiver refused, a
raw record the worker cannot use, a record Kafka refused, spool bytes that hold no frame.
Pure: each says what arrived (bounded) and why it was set aside; the callers send it."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import orjson

from connector.dr import Arrival, provenance
from connector.frames import Damage, Entry

HEAD_CHARS: Final = 4096


def kept(name: str, data: bytes | None, limit: int) -> dict[str, object]:
    """`data` as received, at most `limit` bytes: as text when it is UTF-8, else base64."""
    if data is None:
        return {name: None}
    cut = data[:limit]
    entry: dict[str, object] = {f"{name}_bytes": len(data)}
    try:
        entry[name] = cut.decode("utf-8")
    except UnicodeDecodeError:
        entry[name] = None
        entry[f"{name}_base64"] = base64.b64encode(cut).decode("ascii")
    return entry


def refused_push(
    reason: str,
    arrival: Arrival,
    fields: Mapping[str, str] | None,
    body: bytes | None = None,
    *,
    query: bytes | None = None,
    request: bytes | None = None,
    limit: int = 65536,
) -> bytes:
    """A push the receiver refused: what arrived (exact bytes, bounded), why it was refused.

    The caller scrubs secrets from what it passes in."""
    return orjson.dumps(
        {
            "source": "receiver",
            "reason": reason,
            **provenance(arrival),
            "fields": None if fields is None else dict(fields),
            **kept("query", query, limit),
            **kept("body", body, limit),
            **({} if request is None else kept("request", request, limit)),
        }
    )


def unusable_record(reason: str, topic: str, partition: int, offset: int, value: bytes) -> bytes:
    """A record the worker (or replay) read and cannot use, and where it was read."""
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


def refused_by_kafka(why: str, entry: Entry, *, kept: Path, receiver: str) -> bytes:
    """A record Kafka refused: bounded, the whole record is on disk at `kept`."""
    return orjson.dumps(
        {
            "source": "spool",
            "reason": why,
            "receiver": receiver,
            "topic": entry.topic,
            "key": None if entry.key is None else entry.key[:HEAD_CHARS].decode(errors="replace"),
            "value_bytes": len(entry.value),
            "value_head": entry.value[:HEAD_CHARS].decode("utf-8", errors="replace"),
            "kept": str(kept),
        }
    )


def spool_damage(damage: Damage, receiver: str) -> bytes:
    """Spool bytes that hold no valid frame (quarantined at `damage.kept`)."""
    return orjson.dumps(
        {
            "source": "spool",
            "reason": f"corrupt spool frame: {damage.size} bytes at offset {damage.start} "
            f"of segment {damage.segment}",
            "receiver": receiver,
            "segment": damage.segment,
            "offset": damage.start,
            "bytes": damage.size,
            "kept": None if damage.kept is None else str(damage.kept),
        }
    )
