"""What the worker reads, as plain values: a raw record as an observation (its dead letter
when it cannot be used: `connector.deadletters`).
Shared by the worker and replay; no Faust, no I/O."""

from __future__ import annotations

from datetime import datetime

import orjson

from connector import codec, normalize
from connector.errors import Unusable
from connector.settings import Settings
from connector.topics import TopicNames


def observe(
    topic: str, value: bytes, names: TopicNames, settings: Settings
) -> tuple[normalize.Observation, datetime]:
    """A record as an observation and the time it was observed; raises Unusable."""
    try:
        if topic == names.observations:
            return codec.decode_observation(value)
        record = orjson.loads(value)
        if topic == names.dr_raw:
            seen_at = datetime.fromisoformat(record["received_at"])
            return normalize.from_dr(record["fields"], settings.nxcloud_timezone), seen_at
        seen_at = datetime.fromisoformat(record["fetched_at"])
        row, service = record["row"], int(record["query"]["service"])
        return normalize.from_cdr(row, service, settings.nxcloud_timezone), seen_at
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, Unusable):
            raise
        raise Unusable(f"not a raw record: {type(exc).__name__}: {exc}") from None
