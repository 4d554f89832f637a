import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import dr, normalize
from connector.errors import Invalid
from tests.support import ARRIVAL, EXAMPLE_FIELDS, PROVIDER_EXAMPLE, VERIFICATION, ZONE


def test_the_provider_example_parses_with_its_blank_ivr_result() -> None:
    fields = dr.parse_urlencoded(PROVIDER_EXAMPLE.replace(" ", "%20"), max_fields=64)
    assert fields == EXAMPLE_FIELDS
    assert fields["ivr_result"] == ""
    dr.validate(fields)


def test_plus_means_space_and_percent_escapes_are_decoded() -> None:
    fields = dr.parse_urlencoded("result=Successful+connection&x=%E6%88%90", max_fields=8)
    assert fields == {"result": "Successful connection", "x": "成"}


def test_too_many_fields_is_invalid() -> None:
    with pytest.raises(Invalid, match="too many fields"):
        dr.parse_urlencoded("&".join(f"f{i}=1" for i in range(10)), max_fields=5)


def test_the_body_wins_and_our_token_is_not_a_provider_field() -> None:
    merged = dr.merge({"a": "query", "b": "query", "token": "t"}, {"a": "body"})
    assert merged == {"a": "body", "b": "query"}


def test_voice_type_1_needs_neither_basic_price_nor_ivr_result() -> None:
    fields = {k: v for k, v in VERIFICATION.items() if k != "record_url"}
    dr.validate(fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"voice_type": "2"}, "voice_type must be 0 or 1"),
        ({"voice_type": None}, "missing field: voice_type"),
        ({"ivr_result": None}, "missing fields: ivr_result"),
        ({"basic_price": None, "cycle": None}, "missing fields: cycle, basic_price"),
        ({"messageid": " "}, "blank fields: messageid"),
        ({"phone": "86-150"}, "phone is not a phone number"),
        ({"countryCode": "86a"}, "countryCode is not a country code"),
        ({"size": "1.5"}, "size is not a whole number"),
        ({"second": "-1"}, "second is not a whole non-negative number"),
        ({"second": "19.5"}, "second is not a whole non-negative number"),
        ({"customer_price": "NaN"}, "customer_price is not a non-negative number"),
        ({"start_time": "2020-12-01T00:00:00"}, "start_time is not yyyy-MM-dd HH:mm:ss"),
    ],
)
def test_invalid_pushes_say_why(change: dict[str, str | None], reason: str) -> None:
    fields = {**EXAMPLE_FIELDS}
    for name, value in change.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    with pytest.raises(Invalid, match=reason):
        dr.validate(fields)


def test_blank_optional_times_and_unknown_fields_are_accepted() -> None:
    dr.validate({**EXAMPLE_FIELDS, "start_time": "", "end_time": "", "show_phone": "123"})


def test_the_raw_record_keeps_the_fields_exactly_and_says_where_they_came_from() -> None:
    record = orjson.loads(dr.raw_record(EXAMPLE_FIELDS, ARRIVAL))
    assert record == {
        "receipt_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "received_at": "2026-11-23T10:00:00.123456Z",
        "receiver": "rx-1",
        "remote_addr": "203.0.113.9",
        "method": "GET",
        "content_type": "",
        "fields": EXAMPLE_FIELDS,
    }


def test_a_percent_escape_that_is_not_utf8_is_named_not_counted_as_too_many_fields() -> None:
    gbk = "result=%B3%C9%B9%A6%BD%D3%CD%A8"
    with pytest.raises(Invalid, match="field 'result' is not valid utf-8"):
        dr.parse_urlencoded(gbk, max_fields=64)
    with pytest.raises(Invalid, match="is not valid utf-8"):
        dr.parse_urlencoded("a=%FF", max_fields=64)


@pytest.mark.parametrize("charset", ["gbk", "GB18030", '"gb2312"'])
def test_a_declared_charset_is_honoured(charset: str) -> None:
    codec = dr.charset_of(f"application/x-www-form-urlencoded; charset={charset}")
    fields = dr.parse_urlencoded(b"result=%B3%C9%B9%A6%BD%D3%CD%A8&raw=\xb3\xc9", 64, codec)
    assert fields == {"result": "成功接通", "raw": "成"}


def test_an_unknown_charset_is_invalid() -> None:
    with pytest.raises(Invalid, match="unknown charset"):
        dr.charset_of("text/plain; charset=no-such")
    with pytest.raises(Invalid, match="unknown charset"):
        dr.charset_of("text/plain; charset=base64")
    assert dr.charset_of("application/x-www-form-urlencoded") == "utf-8"


@pytest.mark.parametrize(
    ("name", "value"),
    [("cycle", "²"), ("size", "\u0661"), ("second", "\u0661\u0660")],
)
def test_digits_must_be_ascii(name: str, value: str) -> None:
    with pytest.raises(Invalid, match=name):
        dr.validate({**EXAMPLE_FIELDS, name: value})


@pytest.mark.parametrize("duration", ["\u0663", "00:00:19", "19.5s", "-1", "", None])
def test_a_dr_is_stored_whatever_its_duration_says_since_second_is_the_duration(
    duration: str | None,
) -> None:
    fields = {name: value for name, value in EXAMPLE_FIELDS.items() if name != "duration"}
    if duration is not None:
        fields["duration"] = duration
    dr.validate(fields)
    with pytest.raises(Invalid, match="second"):
        dr.validate({**fields, "second": "0:19"})


SECONDS_SAID = st.one_of(
    st.from_regex(r"\A *-?[0-9]{0,3}(\.[0-9]{0,2})?([eE]-?[0-9])? *\Z"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(SECONDS_SAID)
def test_a_second_the_receiver_takes_is_one_the_worker_can_read(second: str) -> None:
    """A DR the receiver answers `success` must not be dead-lettered by the worker for its
    `second` (a "19.5" once was); what the receiver refuses is dead-lettered there, with
    the request it came in."""
    fields = {**EXAMPLE_FIELDS, "second": second}
    refusal = ""
    try:
        dr.validate(fields)
    except Invalid as refused:
        refusal = str(refused)
    if refusal:
        assert "second" in refusal
    else:
        assert normalize.from_dr(fields, ZONE).facts["duration_seconds"] is not None
