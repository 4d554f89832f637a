"""Made-up phone numbers in ranges the phone-number metadata does not know, for the identity
tests (tests/test_phone.py, tests/test_worker.py)."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber


def metadata(region: str) -> tuple[str, str]:
    """The region's country code and its trunk prefix ("" when it has none)."""
    data = PhoneMetadata.metadata_for_region(region)
    assert data is not None
    return str(data.country_code), data.national_prefix or ""


def unallocated(region: str, national: str, first: str, rest: int) -> str | None:
    """A number as long as `national`, starting with `first`, that the metadata does not
    know: the first one from `rest` on (in steps that touch every digit). A country can
    only allocate a range that does not already dial a number it has, read by its own
    prefix rule, bare or trunk-prefixed (Brazil's 90..., Belarus's 8 10..., Colombia's
    0 7 3... with a carrier code), so such a range is not taken."""
    code, trunk = metadata(region)
    width = len(national) - 1
    for step in range(2000):
        candidate = first + str((rest + step * 7919) % 10**width).zfill(width)
        number = phonenumbers.parse(f"+{code}{candidate}")
        if phonenumbers.national_significant_number(number) != candidate:
            continue  # the metadata reads it as something else
        if phonenumbers.is_valid_number(number) or prefixed(region, candidate):
            continue
        if not (trunk and known(region, candidate, trunk)):
            return candidate
    return None


def prefixed(region: str, national: str) -> bool:
    """Whether `national` starts with what the country's parsing rule takes for a prefix
    (Brazil's collect-call 90) before a number of a possible length: a range it cannot
    allocate."""
    data = PhoneMetadata.metadata_for_region(region)
    assert data is not None
    pattern = data.national_prefix_for_parsing or ""
    match = re.match(pattern, national) if pattern else None
    if match is None or match.end() == 0:
        return False
    rule = data.national_prefix_transform_rule
    readings = {national[match.end() :], re.sub(pattern, rule, national, count=1) if rule else ""}
    return any(
        reading.isdigit()
        and phonenumbers.is_possible_number_with_reason(
            PhoneNumber(country_code=data.country_code, national_number=int(reading))
        )
        == phonenumbers.ValidationResult.IS_POSSIBLE
        for reading in readings
    )


def known(region: str, national: str, trunk: str) -> bool:
    """Whether the country's own rule reads the trunk-prefixed form as another number, or
    as a number it knows, or whether that form is itself a number it knows."""
    try:
        number = phonenumbers.parse(trunk + national, region)
    except phonenumbers.NumberParseException:
        return True  # it dials abroad (Belarus's international prefix is 8 10)
    as_given = phonenumbers.national_significant_number(number) == national
    itself = PhoneNumber(country_code=number.country_code, national_number=int(trunk + national))
    if trunk.startswith("0"):
        itself.italian_leading_zero, itself.number_of_leading_zeros = True, 1
    valid = phonenumbers.is_valid_number
    return not as_given or valid(number) or valid(itself)
