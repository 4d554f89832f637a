from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from connector import identity, normalize
from connector.clock import rfc3339
from connector.errors import Unusable
from connector.normalize import from_cdr, from_dr
from connector.phone import e164
from tests.support import CDR_GROUP_ROW, CDR_VERIFICATION_ROW, EXAMPLE_FIELDS, VERIFICATION

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_a_dr_becomes_an_observation_in_utc_with_decimal_money() -> None:
    seen = from_dr(EXAMPLE_FIELDS, SHANGHAI)
    assert (seen.source, seen.service, seen.message_id) == (
        "dr",
        "group_call",
        "74078a0090f17e011505297261994",
    )
    assert seen.phone == "+8615088888888"
    assert seen.phone_raw == "8615088888888"
    assert seen.facts["connected"] is True
    assert seen.facts["started_at"] == datetime(2020, 11, 30, 16, 0, 0, tzinfo=UTC)
    assert seen.facts["unit_price"] == Decimal("0.036")
    assert seen.facts["basic_price"] == Decimal("0.005")
    assert seen.facts["ivr_result"] == ""
    assert seen.facts["hangup_disposition"] == "send_bye"


def test_a_verification_dr_is_either_verification_or_notification() -> None:
    seen = from_dr(VERIFICATION, SHANGHAI)
    assert seen.service == "verification_or_notification"
    assert seen.family == "verification_or_notification"
    assert seen.facts["connected"] is True
    assert seen.facts["record_url"] == VERIFICATION["record_url"]
    assert seen.phone == "+5585987053821"


def test_cdr_rows_keep_their_types_out_and_their_numbers_exact() -> None:
    group = from_cdr(CDR_GROUP_ROW, 0, SHANGHAI)
    assert group.message_id == "784522"
    assert group.phone == "+8615088888888"
    assert group.facts["cdr_id"] == "11112"
    assert group.facts["unit_price"] == Decimal("0.05")
    assert group.facts["ivr_result"] == "1"
    assert group.facts["connected_at"] == datetime(2019, 9, 9, 1, 0, 0, tzinfo=UTC)
    notification = from_cdr(CDR_VERIFICATION_ROW, 1, SHANGHAI)
    assert notification.service == "notification"
    assert notification.family == "verification_or_notification"
    assert notification.facts["connected"] is False
    assert notification.facts["connected_at"] is None
    assert notification.phone == "+5585987053821"


def test_the_dr_and_cdr_of_one_call_share_a_call_id() -> None:
    dr = from_dr({**EXAMPLE_FIELDS, "messageid": "784522"}, SHANGHAI)
    cdr = from_cdr(CDR_GROUP_ROW, 0, SHANGHAI)
    assert dr.call_id == cdr.call_id
    verification_dr = from_dr({**VERIFICATION, "messageid": "35618"}, SHANGHAI)
    assert verification_dr.call_id == from_cdr(CDR_VERIFICATION_ROW, 1, SHANGHAI).call_id


@pytest.mark.parametrize(
    ("phone", "code", "international_first", "expected"),
    [
        ("8615088888888", "86", True, "+8615088888888"),
        ("15088888888", "86", False, "+8615088888888"),
        ("15088888888", "86", True, "+8615088888888"),
        ("8615088888888", "86", False, "+8615088888888"),
        ("85987053821", "55", False, "+5585987053821"),
        ("+91 98765 43210", "91", True, "+919876543210"),
    ],
)
def test_phone_forms_fall_back_to_the_other_source_form(
    phone: str, code: str, international_first: bool, expected: str
) -> None:
    assert e164(phone, code, international_first=international_first) == expected


def test_both_languages_of_result() -> None:
    assert normalize.connected("Successful connection") is True
    assert normalize.connected("成功接通") is True
    assert normalize.connected("Unsuccessful connection") is False
    assert normalize.connected("未接通") is False
    assert normalize.connected("something new") is None


def test_unknown_disposition_is_null_and_bad_input_is_unusable() -> None:
    assert (
        from_dr({**EXAMPLE_FIELDS, "hangup_disposition": "x"}, SHANGHAI).facts["hangup_disposition"]
        is None
    )
    with pytest.raises(Unusable, match="voice_type"):
        from_dr({**EXAMPLE_FIELDS, "voice_type": "3"}, SHANGHAI)
    with pytest.raises(Unusable, match="messageid"):
        from_cdr({**CDR_GROUP_ROW, "messageid": None}, 0, SHANGHAI)
    with pytest.raises(Unusable, match="customer_price"):
        from_cdr({**CDR_GROUP_ROW, "customer_price": "free"}, 0, SHANGHAI)


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        ("2024-01-15 12:00:00", datetime(2024, 1, 15, 11, 0, 0, tzinfo=UTC)),  # CET, +1
        ("2024-07-15 12:00:00", datetime(2024, 7, 15, 10, 0, 0, tzinfo=UTC)),  # CEST, +2
        ("2024-03-31 01:59:59", datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC)),  # before the jump
        ("2024-03-31 03:00:00", datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC)),  # after it
        # a repeated hour is read as its first occurrence (fold 0: still summer time)
        ("2024-10-27 02:30:00", datetime(2024, 10, 27, 0, 30, 0, tzinfo=UTC)),
    ],
)
def test_times_in_a_daylight_saving_zone_take_the_offset_of_their_date(
    local: str, utc: datetime
) -> None:
    seen = from_cdr({**CDR_GROUP_ROW, "start_time": local}, 0, BERLIN)
    assert rfc3339(seen.facts["started_at"]) == rfc3339(utc)


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("1E-3", Decimal("0.001")),
        ("1e-3", Decimal("0.001")),
        (" 0.050 ", Decimal("0.050")),
        (0.1, Decimal("0.1")),  # the CDR's JSON number, exactly as written, not as a float
        ("1E+2", Decimal("100")),
    ],
)
def test_prices_in_every_notation_are_exact_decimals(price: object, expected: Decimal) -> None:
    seen = from_cdr({**CDR_GROUP_ROW, "customer_price": price}, 0, SHANGHAI)
    assert seen.facts["unit_price"] == expected
    assert isinstance(seen.facts["unit_price"], Decimal)


@pytest.mark.parametrize("price", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf", "1,5"])
def test_a_price_that_is_not_a_finite_number_is_unusable(price: str) -> None:
    with pytest.raises(Unusable, match="customer_price is not a number"):
        from_dr({**EXAMPLE_FIELDS, "customer_price": price}, SHANGHAI)


@pytest.mark.parametrize(
    ("phone", "code", "expected"),
    [
        ("07911123456", "44", "+447911123456"),  # UK mobile written with its trunk 0
        ("0612345678", "33", "+33612345678"),  # France
        ("015112345678", "49", "+4915112345678"),  # Germany
    ],
)
def test_a_national_number_with_its_trunk_prefix_becomes_e164(
    phone: str, code: str, expected: str
) -> None:
    assert e164(phone, code, international_first=False) == expected
    row = {**CDR_GROUP_ROW, "phone": phone, "countryCode": code}
    assert from_cdr(row, 0, SHANGHAI).phone == expected


def test_the_duration_is_second_in_both_sources_and_a_dr_duration_is_not_read() -> None:
    fields = {**EXAMPLE_FIELDS, "messageid": "784522", "duration": "25", "second": "19"}
    assert from_dr(fields, SHANGHAI).facts["duration_seconds"] == 19
    assert from_cdr(CDR_GROUP_ROW, 0, SHANGHAI).facts["duration_seconds"] == 19
    for unreadable in ("00:00:25", "25.5", "", "二十五"):
        seen = from_dr({**fields, "duration": unreadable}, SHANGHAI)
        assert seen.facts["duration_seconds"] == 19
    assert from_cdr({**CDR_GROUP_ROW, "second": 19.0}, 0, SHANGHAI).facts["duration_seconds"] == 19
    with pytest.raises(Unusable, match="second"):
        from_dr({**fields, "second": "19.5"}, SHANGHAI)


def test_the_country_code_is_read_alike_from_both_sources() -> None:
    dr = from_dr({**EXAMPLE_FIELDS, "messageid": "784522", "countryCode": "+86"}, SHANGHAI)
    cdr = from_cdr({**CDR_GROUP_ROW, "countryCode": 86}, 0, SHANGHAI)
    assert dr.country_code == cdr.country_code == "86"
    assert dr.call_id == cdr.call_id


def test_a_cdr_row_with_whole_numbers_sent_as_floats_is_the_same_call() -> None:
    """JSON does not say int from float: a provider (or a proxy) that sends 15088888888.0
    or 1.5088888888e10 must not give the phone one digit more, nor the call another key."""
    floats = {**CDR_GROUP_ROW, "phone": 15088888888.0, "messageid": 7.84522e5,
              "countryCode": 86.0, "id": 11112.0}  # fmt: skip
    as_sent = from_cdr(CDR_GROUP_ROW, 0, SHANGHAI)
    as_floats = from_cdr(floats, 0, SHANGHAI)
    assert as_floats == as_sent
    assert identity.cdr_key(floats) == identity.cdr_key(CDR_GROUP_ROW) == b"784522|8888"
