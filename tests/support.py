"""Shared test values: the provider's examples, observations made of them, and small
checks; plain values, no broker."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jsonschema import Draft202012Validator

from connector import dr, schema
from connector.normalize import from_cdr, from_dr
from connector.settings import Secret, Settings

PROVIDER_EXAMPLE = (
    "phone=8615088888888&countryCode=86&duration=10&voice_type=0"
    "&messageid=74078a0090f17e011505297261994&basic_price=0.005&second=10&cycle=60&size=1"
    "&customer_price=0.036&start_time=2020-12-01 00:00:00&end_time=2020-12-01 00:00:10"
    "&result=Successful connection&hangup_cause=NORMAL_CLEARING&hangup_disposition=send_bye"
    "&ivr_result="
)
EXAMPLE_FIELDS = dict(pair.split("=", 1) for pair in PROVIDER_EXAMPLE.split("&"))
VERIFICATION = {
    "phone": "5585987053821",
    "countryCode": "55",
    "duration": "3",
    "voice_type": "1",
    "messageid": "35618",
    "second": "3",
    "cycle": "1",
    "size": "3",
    "customer_price": "0.012",
    "record_url": "https://records.example/35618.mp3",
    "start_time": "2019-09-09 09:00:01",
    "end_time": "2019-09-09 09:00:04",
    "result": "成功接通",
    "hangup_cause": "NORMAL_CLEARING",
    "hangup_disposition": "recv_bye",
    "show_phone": "1547822456",
}
CDR_GROUP_ROW = {
    "id": 11112,
    "result": "Successful connection",
    "cycle": 20,
    "time": "2019-09-09 09:00:00",
    "start_time": "2019-09-09 09:00:01",
    "end_time": "2019-09-09 09:00:20",
    "phone": "15088888888",
    "basic_price": 0.005,
    "second": 19,
    "countryCode": "86",
    "messageid": 784522,
    "customer_price": 0.05,
    "show_phone": "085944247",
    "size": 1,
    "ivr_result": 1,
}
CDR_VERIFICATION_ROW = {
    "id": 1821556,
    "result": "未接通",
    "cycle": 1,
    "time": "",
    "start_time": "2019-09-09 09:00:01",
    "end_time": "2019-09-09 09:00:04",
    "phone": "85987053821",
    "second": 0,
    "voice_type": 2,
    "countryCode": "55",
    "messageid": 35618,
    "customer_price": 0.012,
    "show_phone": "1547822456",
    "size": 0,
}
ARRIVAL = dr.Arrival(
    receipt_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    received_at=datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC),
    remote_addr="203.0.113.9",
    receiver="rx-1",
    method="GET",
    content_type="",
)
ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DR = from_dr({**EXAMPLE_FIELDS, "messageid": "784522", "customer_price": "0.036"}, ZONE)
CDR = from_cdr(CDR_GROUP_ROW, 0, ZONE)


def validator(name: str) -> Draft202012Validator:
    document = schema.load(name)
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document)


def valid(name: str, value: Any) -> None:
    errors = sorted(validator(name).iter_errors(value), key=str)
    assert not errors, [error.message for error in errors]


def gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def sandboxed_poller(settings: Settings, url: str) -> Settings:
    """`settings` for a poller of the sandbox at `url`: small windows that settle fast."""
    return dataclasses.replace(
        settings,
        nxcloud_appkey=Secret("sandbox"),
        nxcloud_secretkey=Secret("sandbox"),
        nxcloud_cdr_url=url + "/api/voiceSms/getVoiceCdr",
        poller_window_seconds=10,
        poller_settle_seconds=4,
        poller_first_lookback_seconds=40,
        poller_repoll_after_seconds=(30,),
        poller_page_size=8,
    )
