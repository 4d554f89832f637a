"""Secrets masked in what a provider or a broker says back, in every form it may echo them.

A provider that echoes a request may give a secret as it is, %-encoded (either case of hex
digits, every character or only some, even twice), with a `+` it read as a space, in a JSON
string (`\\u00e9`, `\\/`, ...), or in base64, alone, as `appkey:secretkey` or inside a longer
encoded text. Each secret becomes patterns that match any mix of those character forms, and
base64 of the secret (its plain, %-encoded and form-encoded texts) at each of the three byte
alignments it can take inside a longer encoded text, in both alphabets.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from itertools import permutations
from typing import Final
from urllib.parse import quote, quote_plus

MASK: Final = "**********"
# Shorter base64 runs are not masked: they would match ordinary text.
MIN_BASE64: Final = 8
JSON_SHORT: Final = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n",
                     "\r": "r", "\t": "t"}  # fmt: skip


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of each of `secrets` replaced by the mask."""
    values = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    for pattern in patterns(values):
        text = pattern.sub(MASK, text)
    return text


def patterns(values: list[str]) -> list[re.Pattern[str]]:
    """The patterns of `values`: base64 of pairs (`a:b`, HTTP Basic) first, then each value's
    text and base64 forms, longest first."""
    encoded: set[str] = set()
    for first, second in permutations(values, 2):
        encoded |= base64_forms(f"{first}:{second}".encode())
    texts = set(values)
    for value in values:
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            encoded |= base64_forms(form.encode())
    ordered = sorted(encoded, key=len, reverse=True) + sorted(texts, key=len, reverse=True)
    return [re.compile(text_pattern(form)) for form in ordered]


def text_pattern(value: str) -> str:
    """A regular expression matching `value` with each character in any of its forms."""
    return "".join(character(c) for c in value)


def character(c: str) -> str:
    forms = {re.escape(c), percent(c.encode()), percent(c.encode(), twice=True)}
    forms.add(json_escape(c))
    if c in JSON_SHORT:
        forms.add(re.escape("\\" + JSON_SHORT[c]))
    if c == "+":  # a form decoder reads a raw `+` as a space
        forms |= {" ", percent(b" ")}
    if c == " ":
        forms.add(re.escape("+"))
    return "(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")"


def percent(data: bytes, *, twice: bool = False) -> str:
    """%-encoded `data` (`twice`: the `%` encoded again), either case of hex digit."""
    sign = "%25" if twice else "%"
    return "".join(sign + hex_digits(f"{byte:02X}") for byte in data)


def json_escape(c: str) -> str:
    """`\\uXXXX` (a surrogate pair beyond the BMP), either case of hex digit."""
    units = c.encode("utf-16-be")
    codes = [int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2)]
    return "".join(re.escape("\\") + "u" + hex_digits(f"{code:04X}") for code in codes)


def hex_digits(digits: str) -> str:
    return "".join(f"[{d.lower()}{d}]" if d.isalpha() else d for d in digits)


def base64_forms(raw: bytes) -> set[str]:
    """The base64 of `raw` as a whole (padded and not), and the characters that encode only
    `raw`'s bytes when it sits at each byte alignment inside a longer text; in the standard
    and the URL-safe alphabet."""
    whole = base64.b64encode(raw).decode()
    forms = {whole, whole.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode().rstrip("=")
        first = -(-8 * offset // 6)
        last = (8 * (offset + len(raw)) - 6) // 6
        forms.add(encoded[first : last + 1])
    forms = {form for form in forms if len(form) >= MIN_BASE64}
    return forms | {form.replace("+", "-").replace("/", "_") for form in forms}
