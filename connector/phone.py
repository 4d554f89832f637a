"""A call's phone number in E.164, from whatever form either source gives it. Pure.

The DR gives the number with its country code (`447911123456`), the CDR row in national
form, sometimes with the country's trunk prefix (`07911123456`); either may carry `+`,
`00`, spaces or dashes. Both must give the same E.164 even for a number in a range the
phone-number metadata does not know yet, so the metadata's validity is only a tie-breaker:
the rule is the country's own trunk-prefix rule and its possible lengths.

1. The country code is the given one, digits only, leading zeros dropped.
2. A number written with `+` or with `00` and the country code is international: the
   digits after the country code are the national number. Otherwise there are two
   readings: the digits as the national number, and, when they start with the country
   code, the digits after it. The source's own reading (international for the DR,
   national for the CDR) is tried first.
3. Each reading loses its trunk prefix by the country's rule (`national_prefix_for_parsing`
   and its transform in the metadata, or the bare `national_prefix`) when that gives a
   valid number, else when it gives a possible length; a number valid or of a possible
   length only as it stands keeps its digits.
4. The first reading with a possible length for the country wins, else the source's own
   reading: validity never overrides the source's documented form, since a number of an
   unknown range is never valid but its other reading may be. Longer than 15 digits is
   no number at all.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber

from connector.errors import Unusable

MAX_DIGITS: Final = 15
POSSIBLE: Final = phonenumbers.ValidationResult.IS_POSSIBLE


@lru_cache(maxsize=65536)
def e164(phone: str, country_code: str, *, international_first: bool) -> str:
    """`phone` in E.164 (`+` and at most 15 digits) in the country of `country_code`.

    `international_first` says which reading the source documents: True for the DR (the
    number with its country code), False for a CDR row (the national number)."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    code = country_code_of(country_code)
    if not digits:
        raise Unusable(f"phone is not a number: {phone!r}")
    text = phone.strip()
    if not code or (text.startswith("+") and not digits.startswith(code)):
        code, chosen = "", digits  # no country given, or another one: the digits carry it
    else:
        chosen = _choose(code, _readings(text, digits, code, international_first))
    if not chosen or len(code) + len(chosen) > MAX_DIGITS:
        raise Unusable(f"phone is not a number in any form: {phone!r} (country {country_code!r})")
    return f"+{code}{chosen}"


def country_code_of(country_code: str) -> str:
    """The country calling code as digits without leading zeros (`+44`, `0044` and `44`)."""
    return "".join(ch for ch in country_code if ch.isdigit()).lstrip("0")


def _readings(text: str, digits: str, code: str, international_first: bool) -> list[str]:
    """The national numbers `digits` can be read as, the source's own reading first."""
    if text.startswith("+"):
        return [digits[len(code) :]]
    if digits.startswith("00" + code):
        return [digits[len(code) + 2 :]]
    national = [digits]
    international = [digits[len(code) :]] if digits.startswith(code) else []
    return international + national if international_first else national + international


def _choose(code: str, readings: list[str]) -> str:
    metadata = _metadata(code)
    if metadata is None:
        return readings[0]
    numbers = [_without_trunk_prefix(code, reading, metadata) for reading in readings]
    possible = [number for number in numbers if number and _possible(code, number)]
    return (possible or numbers)[0]


def _without_trunk_prefix(code: str, number: str, metadata: PhoneMetadata) -> str:
    """`number` without the country's trunk prefix (and carrier code), by its metadata.

    Stripped by the parsing rule (which may take a carrier code along) or by the bare
    trunk prefix, the first valid form wins, then the first of a possible length."""
    forms = [*_stripped(number, metadata), number]
    for test in (_valid, _possible):
        for form in forms:
            if test(code, form):
                return form
    return forms[0]


def _stripped(number: str, metadata: PhoneMetadata) -> list[str]:
    forms = []
    pattern = metadata.national_prefix_for_parsing or ""
    match = re.match(pattern, number) if pattern else None
    if match is not None and match.end() > 0:
        rule = metadata.national_prefix_transform_rule
        if rule and match.lastindex is not None and match.group(match.lastindex) is not None:
            forms.append(re.sub(pattern, rule, number, count=1))
        else:
            forms.append(number[match.end() :])
    prefix = metadata.national_prefix
    if prefix and number.startswith(prefix):
        forms.append(number[len(prefix) :])
    return [form for form in forms if form and form != number]


@lru_cache(maxsize=512)
def _metadata(code: str) -> PhoneMetadata | None:
    region = phonenumbers.region_code_for_country_code(int(code))
    if region == phonenumbers.UNKNOWN_REGION:
        return None
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return PhoneMetadata.metadata_for_nongeo_region(int(code), None)
    return PhoneMetadata.metadata_for_region(region, None)


def _number(code: str, national: str) -> PhoneNumber:
    number = PhoneNumber(country_code=int(code), national_number=int(national))
    zeros = len(national) - len(national.lstrip("0"))
    if zeros and len(national) > 1:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = min(zeros, len(national) - 1)
    return number


@lru_cache(maxsize=65536)
def _valid(code: str, national: str) -> bool:
    return phonenumbers.is_valid_number(_number(code, national))


@lru_cache(maxsize=65536)
def _possible(code: str, national: str) -> bool:
    return phonenumbers.is_possible_number_with_reason(_number(code, national)) == POSSIBLE
