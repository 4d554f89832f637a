"""Every record the connector writes is valid against the schema it publishes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from connector import cdr, dr
from connector.merge import merge
from connector.normalize import from_cdr, from_dr
from tests.test_dr import ARRIVAL
from tests.test_merge import CDR, DR, ZONE
from tests.test_normalize import CDR_VERIFICATION_ROW
from tests.test_receiver import EXAMPLE_FIELDS, VERIFICATION

SCHEMAS = Path(__file__).parent.parent / "schemas"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def validator(name: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMAS / name).read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def valid(name: str, value: Any) -> None:
    errors = sorted(validator(name).iter_errors(value), key=str)
    assert not errors, [error.message for error in errors]


def test_call_events_of_every_kind_match_the_schema() -> None:
    state, first = merge(None, CDR, T0)
    _, second = merge(state, DR, T0)
    lone_dr = merge(None, from_dr({**VERIFICATION, "messageid": "35618"}, ZONE), T0)[1]
    lone_cdr = merge(None, from_cdr(CDR_VERIFICATION_ROW, 1, ZONE), T0)[1]
    for event in (first, second, lone_dr, lone_cdr):
        valid("call-event.v1.json", event)


def test_an_event_missing_a_field_does_not_match() -> None:
    event = merge(None, CDR, T0)[1]
    assert event is not None
    del event["billing"]["cost"]
    assert list(validator("call-event.v1.json").iter_errors(event))


def test_raw_dr_records_and_dead_letters_match() -> None:
    valid("dr-raw.v1.json", orjson.loads(dr.raw_record(EXAMPLE_FIELDS, ARRIVAL)))
    letter = dr.dead_letter("bad", ARRIVAL, {"a": ""}, b"a=")
    valid("dead-letter.v1.json", orjson.loads(letter))
    unreadable = dr.dead_letter("x", ARRIVAL, None, b"\xff", query=b"a=\xb3", request=b"G\xff")
    valid("dead-letter.v1.json", orjson.loads(unreadable))


@pytest.mark.parametrize("service", [0, 1])
def test_raw_cdr_records_match(service: int) -> None:
    window = cdr.Window(service, T0.replace(hour=9), T0)
    row = {"id": 1, "messageid": 2, "phone": "150", "countryCode": "86", "customer_price": 0.1}
    valid("cdr-raw.v1.json", orjson.loads(cdr.raw_record(row, window, 1, T0, "acct")))
