"""DR pushes as plain values: read the fields, validate them, shape the raw record.

Pure: no I/O, the clock and the receipt id are passed in.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final
from urllib.parse import unquote_to_bytes

import orjson

from connector.clock import parse_provider_time, rfc3339
from connector.errors import Invalid

# `duration` (a string, "connection duration") is not among them: the call's duration is
# `second`, which billing follows and the CDR row shares, so a DR whose `duration` is
# missing or unreadable is stored like any other; it stays on the raw topic as received.
COMMON_FIELDS: Final = (
    "phone",
    "countryCode",
    "voice_type",
    "messageid",
    "second",
    "cycle",
    "size",
    "customer_price",
    "result",
    "hangup_cause",
    "hangup_disposition",
)
REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "0": (*COMMON_FIELDS, "basic_price", "ivr_result"),
    "1": COMMON_FIELDS,
}
NOT_BLANK: Final = ("phone", "countryCode", "messageid", "voice_type")
COUNTS: Final = ("cycle", "size")
AMOUNTS: Final = ("customer_price", "basic_price")
SECONDS: Final = "second"  # whole, as the worker reads it (billing counts whole seconds)
TIMES: Final = ("start_time", "end_time")
PHONE: Final = re.compile(r"\+?[0-9]{4,20}")
COUNTRY_CODE: Final = re.compile(r"\+?[0-9]{1,4}")
WHOLE: Final = re.compile(r"[0-9]+")
HEADER_CHARS: Final = 256
TOKEN_FIELD: Final = "token"  # noqa: S105 - the name of a field, not a secret

Fields = dict[str, str]


def charset_of(content_type: str) -> str:
    """The declared `charset` of a Content-Type, as a codec name; UTF-8 when none is declared."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            declared = value.strip().strip('"').lower()
            try:
                info = codecs.lookup(declared)
            except LookupError:
                raise Invalid(f"unknown charset {declared[:40]!r}") from None
            if not info._is_text_encoding:
                raise Invalid(f"unknown charset {declared[:40]!r}")
            return info.name
    return "utf-8"


def split_form(data: bytes, max_fields: int) -> list[tuple[bytes, bytes]]:
    """The name/value pairs of a query string or form body as bytes, `+` and %-escapes undone."""
    parts = [part for part in data.split(b"&") if part]
    if len(parts) > max_fields:
        raise Invalid(f"too many fields ({len(parts)}, at most {max_fields})")
    pairs = []
    for part in parts:
        name, _, value = part.replace(b"+", b" ").partition(b"=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def decode_form(pairs: list[tuple[bytes, bytes]], charset: str = "utf-8") -> Fields:
    """The pairs as text in `charset`, keeping blank values and the last of repeats."""
    fields: Fields = {}
    for raw_name, raw_value in pairs:
        try:
            name = raw_name.decode(charset)
            fields[name] = raw_value.decode(charset)
        except UnicodeDecodeError:
            shown = raw_name.decode(charset, errors="replace")[:40]
            raise Invalid(f"field {shown!r} is not valid {charset}") from None
    return fields


def parse_urlencoded(data: bytes | str, max_fields: int, charset: str = "utf-8") -> Fields:
    """Decode a query string or form body in `charset`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return decode_form(split_form(raw, max_fields), charset)


def merge(query: Mapping[str, str], body: Mapping[str, str]) -> Fields:
    """Fields from both places; where a field is in both, the body wins. Our token is dropped."""
    fields = {**query, **body}
    fields.pop(TOKEN_FIELD, None)
    return fields


def validate(fields: Mapping[str, str]) -> None:
    """Raise Invalid unless the fields form a DR of voice_type 0 or 1 as documented."""
    voice_type = fields.get("voice_type")
    if voice_type is None:
        raise Invalid("missing field: voice_type")
    required = REQUIRED.get(voice_type.strip())
    if required is None:
        raise Invalid(f"voice_type must be 0 or 1, got {voice_type!r}")
    missing = [name for name in required if name not in fields]
    if missing:
        raise Invalid("missing fields: " + ", ".join(missing))
    blank = [name for name in NOT_BLANK if not fields[name].strip()]
    if blank:
        raise Invalid("blank fields: " + ", ".join(blank))
    if not PHONE.fullmatch(fields["phone"].strip()):
        raise Invalid(f"phone is not a phone number: {fields['phone']!r}")
    if not COUNTRY_CODE.fullmatch(fields["countryCode"].strip()):
        raise Invalid(f"countryCode is not a country code: {fields['countryCode']!r}")
    for name in COUNTS:
        if not WHOLE.fullmatch(fields[name].strip()):
            raise Invalid(f"{name} is not a whole number: {fields[name]!r}")
    for name in AMOUNTS:
        if name in fields and not _is_amount(fields[name]):
            raise Invalid(f"{name} is not a non-negative number: {fields[name]!r}")
    if SECONDS in fields and not _is_amount(fields[SECONDS], whole=True):
        raise Invalid(f"{SECONDS} is not a whole non-negative number: {fields[SECONDS]!r}")
    for name in TIMES:
        value = fields.get(name, "").strip()
        if value and not _is_time(value):
            raise Invalid(f"{name} is not yyyy-MM-dd HH:mm:ss: {value!r}")


def _is_amount(raw: str, *, whole: bool = False) -> bool:
    if not raw.isascii():
        return False
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        return False
    if not value.is_finite() or value < 0:
        return False
    return not whole or value == value.to_integral_value()


def _is_time(raw: str) -> bool:
    try:
        parse_provider_time(raw, UTC)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Arrival:
    """How and when a push reached us."""

    receipt_id: str
    received_at: datetime
    remote_addr: str
    receiver: str
    method: str
    content_type: str


def cut(value: str, limit: int = HEADER_CHARS) -> str:
    """`value`, or its first `limit` characters and a visible note of how much was cut."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...[cut {len(value) - limit} chars]"


def provenance(arrival: Arrival) -> dict[str, str]:
    """Where a push came from; header-borne values are cut so a record stays small."""
    return {
        "receipt_id": arrival.receipt_id,
        "received_at": rfc3339(arrival.received_at),
        "receiver": cut(arrival.receiver),
        "remote_addr": cut(arrival.remote_addr),
        "method": cut(arrival.method),
        "content_type": cut(arrival.content_type),
    }


def raw_record(fields: Mapping[str, str], arrival: Arrival) -> bytes:
    """The record stored on the raw DR topic: the fields exactly as received, with provenance."""
    return orjson.dumps({**provenance(arrival), "fields": dict(fields)})
