"""DRs and CDR rows as one kind of observation of a call. Pure: the zone is an argument.

A call is (service family, messageid, phone in E.164, by `connector.phone`), its id by
`connector.identity.call_id`. A field both sources carry is read from the field they share:
the duration is `second` in both (the DR's `duration` stays on the raw topic, unread), the
country code is digits only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from zoneinfo import ZoneInfo

from connector.clock import parse_provider_time
from connector.errors import Unusable
from connector.identity import call_id, spelled
from connector.phone import country_code_of, e164

GROUP_CALL: Final = "group_call"
VERIFICATION: Final = "verification"
NOTIFICATION: Final = "notification"
EITHER: Final = "verification_or_notification"
FAMILIES: Final = {
    GROUP_CALL: GROUP_CALL,
    VERIFICATION: EITHER,
    NOTIFICATION: EITHER,
    EITHER: EITHER,
}
CONNECTED: Final = frozenset({"successful connection", "成功接通"})
NOT_CONNECTED: Final = frozenset({"unsuccessful connection", "未接通"})
DISPOSITIONS: Final = frozenset({"send_cancel", "recv_refuse", "recv_bye", "send_bye", "other"})


@dataclass(frozen=True)
class Observation:
    source: str
    service: str
    message_id: str
    phone: str
    phone_raw: str
    country_code: str
    facts: Mapping[str, Any]

    @property
    def family(self) -> str:
        return FAMILIES[self.service]

    @property
    def call_id(self) -> str:
        return call_id(self.family, self.message_id, self.phone)


def connected(result: str) -> bool | None:
    text = result.strip().lower()
    if text in CONNECTED:
        return True
    if text in NOT_CONNECTED:
        return False
    return None


def local_time(text: Any, zone: ZoneInfo) -> datetime | None:
    if text is None or not str(text).strip():
        return None
    try:
        return parse_provider_time(str(text).strip(), zone)
    except ValueError:
        raise Unusable(f"time is not yyyy-MM-dd HH:mm:ss: {text!r}") from None


def decimal(value: Any, name: str) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise Unusable(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise Unusable(f"{name} is not a number: {value!r}")
    return number


def whole(value: Any, name: str) -> int | None:
    number = decimal(value, name)
    if number is None:
        return None
    if number != number.to_integral_value():
        raise Unusable(f"{name} is not a whole number: {value!r}")
    return int(number)


def text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def from_dr(fields: Mapping[str, str], zone: ZoneInfo) -> Observation:
    """A DR's fields (strings, as received) as an observation."""
    voice_type = fields.get("voice_type", "").strip()
    if voice_type not in ("0", "1"):
        raise Unusable(f"voice_type must be 0 or 1, got {voice_type!r}")
    service = GROUP_CALL if voice_type == "0" else EITHER
    phone_raw = fields.get("phone", "")
    country_code = country_code_of(fields.get("countryCode", ""))
    disposition = fields.get("hangup_disposition", "").strip()
    facts = {
        "connected": connected(fields.get("result", "")),
        "result_raw": fields.get("result"),
        "hangup_cause": fields.get("hangup_cause") or None,
        "hangup_disposition": disposition if disposition in DISPOSITIONS else None,
        "ivr_result": fields.get("ivr_result") if service == GROUP_CALL else None,
        "record_url": fields.get("record_url") or None,
        "started_at": local_time(fields.get("start_time"), zone),
        "ended_at": local_time(fields.get("end_time"), zone),
        "duration_seconds": whole(fields.get("second"), "second"),
        "cycle_seconds": whole(fields.get("cycle"), "cycle"),
        "cycles": whole(fields.get("size"), "size"),
        "unit_price": decimal(fields.get("customer_price"), "customer_price"),
        "basic_price": decimal(fields.get("basic_price"), "basic_price"),
        "display_number": fields.get("show_phone") or None,
    }
    return Observation(
        source="dr",
        service=service,
        message_id=_message_id(fields.get("messageid")),
        phone=e164(phone_raw, country_code, international_first=True),
        phone_raw=phone_raw,
        country_code=country_code,
        facts=facts,
    )


def from_cdr(row: Mapping[str, Any], service_queried: int, zone: ZoneInfo) -> Observation:
    """A CDR row (numbers as the provider types them) as an observation."""
    if service_queried == 0:
        service = GROUP_CALL
    else:
        kind = whole(row.get("voice_type"), "voice_type")
        service = {1: VERIFICATION, 2: NOTIFICATION}.get(kind or 0, EITHER)
    phone_raw = spelled(row.get("phone"))
    country_code = country_code_of(spelled(row.get("countryCode")))
    ivr = row.get("ivr_result")
    facts = {
        "connected": connected(str(row.get("result", ""))),
        "result_raw": text(row.get("result")),
        "ivr_result": text(ivr) if service == GROUP_CALL and ivr is not None else None,
        "started_at": local_time(row.get("start_time"), zone),
        "ended_at": local_time(row.get("end_time"), zone),
        "connected_at": local_time(row.get("time"), zone),
        "duration_seconds": whole(row.get("second"), "second"),
        "cycle_seconds": whole(row.get("cycle"), "cycle"),
        "cycles": whole(row.get("size"), "size"),
        "unit_price": decimal(row.get("customer_price"), "customer_price"),
        "basic_price": decimal(row.get("basic_price"), "basic_price"),
        "display_number": text(row.get("show_phone")) or None,
        "cdr_id": spelled(row.get("id")) or None,
    }
    return Observation(
        source="cdr",
        service=service,
        message_id=_message_id(row.get("messageid")),
        phone=e164(phone_raw, country_code, international_first=False),
        phone_raw=phone_raw,
        country_code=country_code,
        facts=facts,
    )


def _message_id(value: Any) -> str:
    message_id = spelled(value).strip()
    if not message_id:
        raise Unusable("messageid is missing")
    return message_id
