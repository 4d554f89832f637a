"""Every form either source gives a number in maps to one E.164 and one call_id, for every
region phonenumbers knows: its example numbers, and made-up numbers of the same length in
ranges its metadata does not know (as a range allocated after the library was built)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from connector.errors import Unusable
from connector.merge import merge
from connector.normalize import from_cdr, from_dr
from connector.phone import country_code_of, e164
from tests.phone_helpers import metadata, unallocated
from tests.support import CDR_GROUP_ROW, EXAMPLE_FIELDS

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
TYPES = [kind for name, kind in vars(PhoneNumberType).items() if name.isupper()]


@cache
def examples(region: str) -> list[str]:
    """The national significant numbers of the region's example numbers, one per type."""
    found = [phonenumbers.example_number_for_type(region, kind) for kind in TYPES]
    return sorted({phonenumbers.national_significant_number(n) for n in found if n})


def dr_forms(code: str, national: str, trunk: str) -> list[str]:
    """The DR's number: with its country code, with or without `+` or `00`, spaced."""
    forms = [code + national, f"+{code}{national}", f"00{code}{national}",
             f"+{code} {national[:3]}-{national[3:]}"]  # fmt: skip
    if trunk:
        forms.append(f"+{code} ({trunk}) {national}")
    return forms


def cdr_forms(code: str, national: str, trunk: str) -> list[object]:
    """The CDR row's number: national, with or without the trunk prefix, spaces or dashes,
    as a JSON number; or, unasked for, international with `+` or `00`."""
    forms: list[object] = [national, f"{national[:3]} {national[3:6]}-{national[6:]}",
                           f"+{code} {national}", f"00{code}{national}"]  # fmt: skip
    if trunk:
        forms += [trunk + national, f"{trunk} {national[:3]}-{national[3:]}"]
    if not national.startswith("0"):
        forms.append(int(national))
    return forms


def assert_one_call(region: str, national: str) -> None:
    """Every DR form and every CDR form give `+<code><national>`, a DR and a CDR row the
    same call_id, and the call merges to the same identity in both arrival orders."""
    code, trunk = metadata(region)
    expected = f"+{code}{national}"
    for phone in dr_forms(code, national, trunk):
        assert e164(phone, code, international_first=True) == expected, (region, phone)
    for form in cdr_forms(code, national, trunk):
        assert e164(str(form), code, international_first=False) == expected, (region, form)
    fields = {**EXAMPLE_FIELDS, "messageid": "784522", "countryCode": f"+{code}"}
    dr = from_dr({**fields, "phone": code + national}, ZONE)
    row = {**CDR_GROUP_ROW, "countryCode": int(code), "phone": (trunk or "") + national}
    cdr = from_cdr(row, 0, ZONE)
    assert (dr.phone, dr.call_id) == (cdr.phone, cdr.call_id) == (expected, dr.call_id)
    dr_first, _ = merge(merge(None, dr, T0)[0], cdr, T0 + timedelta(minutes=5))
    cdr_first, _ = merge(merge(None, cdr, T0 + timedelta(minutes=5))[0], dr, T0)
    identity = ("call_id", "phone", "phone_raw", "country_code")
    assert [getattr(dr_first, name) for name in identity] == [
        getattr(cdr_first, name) for name in identity
    ]


@pytest.mark.parametrize("region", REGIONS)
def test_every_form_of_every_example_number_is_one_call(region: str) -> None:
    numbers = examples(region)
    assert numbers, region
    for national in numbers:
        assert_one_call(region, national)


def first_digits(region: str, national: str) -> list[str]:
    """A national number never starts with the trunk prefix, nor with 0 where the
    country's numbers do not (a leading 0 is the trunk prefix almost everywhere)."""
    _, trunk = metadata(region)
    return [
        digit
        for digit in "0123456789"
        if not (trunk and trunk.startswith(digit)) and (digit != "0" or national[0] == "0")
    ]


@st.composite
def made_up(draw: st.DrawFn, region: str) -> str | None:
    """An unknown number as long as one of the region's examples (the drawn one first)."""
    numbers = examples(region)
    at, start = draw(st.integers(0, len(numbers) - 1)), draw(st.integers(0, 9))
    rest = draw(st.integers(0, 10**15))
    for national in numbers[at:] + numbers[:at]:
        digits = first_digits(region, national)
        start %= len(digits)
        for first in digits[start:] + digits[:start]:
            found = unallocated(region, national, first, rest)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("region", REGIONS)
def test_every_form_of_a_number_in_an_unknown_range_is_one_call(region: str) -> None:
    @hypothesis_settings(
        max_examples=2, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(made_up(region))
    def check(national: str | None) -> None:
        assert national is not None, f"{region} has no unknown range of its examples' lengths"
        assert_one_call(region, national)

    check()


@pytest.mark.parametrize(
    ("phone", "code", "international_first", "expected"),
    [
        ("447400123456", "44", True, "+447400123456"),  # the DR's form
        ("07400123456", "44", False, "+447400123456"),  # the CDR's, with the trunk prefix
        ("7400123456", "44", False, "+447400123456"),
        ("+44 (0)7400 123456", "0044", True, "+447400123456"),
        ("88001234567", "7", False, "+78001234567"),  # trunk 8, then 800: Russia's toll-free
        ("8001234567", "7", False, "+78001234567"),  # 800 itself, no trunk prefix to strip
        ("7012345678", "7", False, "+77012345678"),  # Kazakhstan: national starts like +7
        ("77012345678", "7", True, "+77012345678"),
        ("011 15 1234-5678", "54", False, "+5491112345678"),  # Argentina: 0 11 15 -> 9 11
        ("+8613800138000", "44", True, "+8613800138000"),  # another country, stated with +
        ("13800138000", "", False, "+13800138000"),  # no country: the digits carry it
    ],
)
def test_the_rule_on_hard_cases(
    phone: str, code: str, international_first: bool, expected: str
) -> None:
    assert e164(phone, code, international_first=international_first) == expected


@pytest.mark.parametrize("phone", ["", "--", "1234567890123456", "+44 1234567890123456"])
def test_what_is_no_number_is_unusable(phone: str) -> None:
    with pytest.raises(Unusable, match="phone"):
        e164(phone, "44", international_first=False)


def test_the_country_code_is_digits_without_leading_zeros() -> None:
    assert {country_code_of(c) for c in ("44", "+44", "0044", " 44 ")} == {"44"}
