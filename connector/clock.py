"""Time as the connector writes it: RFC 3339, UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

# every component's latency histograms, in seconds
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROVIDER_TIME: Final = "%Y-%m-%d %H:%M:%S"
# what strptime(PROVIDER_TIME) accepts, matched without its per-call cost
_PROVIDER_TIME: Final = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})", re.ASCII
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=65536)
def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the microsecond when there is one."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: attach a zone before formatting")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def provider_time(moment: datetime, zone: ZoneInfo) -> str:
    """The provider's `yyyy-MM-dd HH:mm:ss`, in its (configured) zone."""
    return moment.astimezone(zone).strftime(PROVIDER_TIME)


@lru_cache(maxsize=65536)
def parse_provider_time(text: str, zone: tzinfo) -> datetime:
    """Raises ValueError unless `text` is `yyyy-MM-dd HH:mm:ss`."""
    match = _PROVIDER_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not yyyy-MM-dd HH:mm:ss: {text!r}")
    year, month, day, hour, minute, second = map(int, match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)
