"""Time as the connector writes it: RFC 3339, UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the microsecond when there is one."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: attach a zone before formatting")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")
