"""The CDR query as plain values: windows, request forms, answers and raw records. Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from connector.clock import provider_time, rfc3339
from connector.errors import Malformed

MAX_WINDOW: Final = timedelta(hours=24)
LOOKBACK: Final = timedelta(days=7)
SERVICES: Final = (0, 1)
# Whole words (no ASCII letter either side: "ip" counts in "illegal IP" and "IP不合法", not in
# "multiple"), and the Chinese terms, that make a refusal one about credentials or the
# IP allow-list.
CREDENTIAL_WORDS: Final = re.compile(
    r"(?<![a-z])(?:appkey|secretkey|secret|keys?|auth|authentication|authori[sz]ation"
    r"|unauthori[sz]ed|credentials?|ip|signature|sign|token|password|whitelist|allowlist)"
    r"(?![a-z])|密钥|秘钥|鉴权|认证|签名|白名单",
)


@dataclass(frozen=True, order=True)
class Window:
    """One query: a service (voiceType 0 or 1) and a time range, end exclusive, in UTC."""

    service: int
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"service must be 0 or 1, got {self.service}")
        if not timedelta(0) < self.end - self.start <= MAX_WINDOW:
            raise ValueError("a window spans more than 0 and at most 24 hours")

    def as_json(self) -> dict[str, Any]:
        return {"service": self.service, "start": rfc3339(self.start), "end": rfc3339(self.end)}


def query_form(
    window: Window, page: int, page_size: int, *, appkey: str, secretkey: str, zone: ZoneInfo
) -> dict[str, str]:
    """The form body of one page request. It carries credentials: never log it.

    Whether the provider's end_time is inclusive is not documented, so the request ends at
    the window's end: adjacent windows share one second, and a row seen twice is harmless.
    """
    return {
        "appkey": appkey,
        "secretkey": secretkey,
        "voiceType": str(window.service),
        "start_time": provider_time(window.start, zone),
        "end_time": provider_time(window.end, zone),
        "page_size": str(page_size),
        "page": str(page),
    }


@dataclass(frozen=True)
class Page:
    total: int
    rows: tuple[Mapping[str, Any], ...]

    def pages(self, page_size: int) -> int:
        return max(1, math.ceil(self.total / page_size))


@dataclass(frozen=True)
class Refusal:
    """A `code: "0"` answer: the provider refused the query."""

    message: str

    @property
    def about_credentials(self) -> bool:
        return about_credentials(self.message)


def about_credentials(message: str) -> bool:
    """True when a refusal's text names credentials or the IP allow-list (whole words)."""
    return CREDENTIAL_WORDS.search(message.lower()) is not None


def parse_answer(body: bytes) -> Page | Refusal:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise Malformed("not a JSON object")
    code = str(answer.get("code", ""))
    if code == "0":
        return Refusal(str(answer.get("msg") or answer.get("message") or answer.get("info") or ""))
    if code != "1":
        raise Malformed(f"unknown code {answer.get('code')!r}")
    info = answer.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("rows", []), list):
        raise Malformed("info.rows missing")
    try:
        total = int(info.get("total", 0))
    except (TypeError, ValueError):
        raise Malformed(f"info.total is not a number: {info.get('total')!r}") from None
    rows = tuple(row for row in info.get("rows", []) if isinstance(row, dict))
    return Page(total, rows)


def raw_record(
    row: Mapping[str, Any], window: Window, page: int, fetched_at: datetime, account: str
) -> bytes:
    """The row exactly as received (types included), and the query it came from."""
    return orjson.dumps(
        {
            "account": account,
            "fetched_at": rfc3339(fetched_at),
            "query": {**window.as_json(), "page": page},
            "row": dict(row),
        }
    )
