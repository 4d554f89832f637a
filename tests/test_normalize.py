from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from connector import normalize
from connector.normalize import Unusable, e164, from_cdr, from_dr
from tests.test_receiver import EXAMPLE_FIELDS, VERIFICATION

SHANGHAI = ZoneInfo("Asia/Shanghai")
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
    ("phone", "code", "national_first", "expected"),
    [
        ("8615088888888", "86", False, "+8615088888888"),
        ("15088888888", "86", True, "+8615088888888"),
        ("15088888888", "86", False, "+8615088888888"),
        ("8615088888888", "86", True, "+8615088888888"),
        ("85987053821", "55", True, "+5585987053821"),
        ("+91 98765 43210", "91", False, "+919876543210"),
    ],
)
def test_phone_forms_fall_back_to_the_other_source_form(
    phone: str, code: str, national_first: bool, expected: str
) -> None:
    assert e164(phone, code, national_first=national_first) == expected


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
