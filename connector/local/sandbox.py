"""A local stand-in for NXCloud: the CDR query API with its limits, and DR pushes.

Calls are a pure function of (seed, message number), so a seeded sandbox serves the same
calls every time and any window is computed directly, without storing history.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector import normalize
from connector.cdr import LOOKBACK, MAX_WINDOW
from connector.clock import parse_provider_time, provider_time, utcnow
from connector.merge import CallState, merge

log = logging.getLogger(__name__)

RESULTS = {
    ("en", True): "Successful connection",
    ("en", False): "Unsuccessful connection",
    ("zh", True): "成功接通",
    ("zh", False): "未接通",
}
FAILED_CAUSES = (
    ("NO_ANSWER", "send_cancel"),
    ("USER_BUSY", "recv_refuse"),
    ("CALL_REJECTED", "recv_refuse"),
    ("NO_USER_RESPONSE", "send_cancel"),
    ("UNALLOCATED_NUMBER", "other"),
)
COUNTRIES = (("86", "150", 8), ("55", "859", 8), ("91", "98", 8), ("62", "812", 8))


@dataclass(frozen=True)
class Call:
    message: int
    leg: int
    service: str
    messageid: int
    cdr_id: int
    country_code: str
    national: str
    started_at: datetime
    connected: bool
    seconds: int
    cycle: int
    unit_price: Decimal
    basic_price: Decimal | None
    language: str
    hangup_cause: str
    hangup_disposition: str
    ivr_result: str
    record_url: str
    show_phone: str

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(seconds=max(self.seconds, 1) + 5)

    @property
    def connected_at(self) -> datetime:
        return self.started_at + timedelta(seconds=5)

    @property
    def size(self) -> int:
        return -(-self.seconds // self.cycle) if self.connected else 0

    def cdr_row(self, zone: ZoneInfo, settled: bool) -> dict[str, Any]:
        price = (
            self.unit_price
            if settled
            else (self.unit_price * Decimal("1.2")).quantize(Decimal("0.0001"))
        )
        row: dict[str, Any] = {
            "id": self.cdr_id,
            "result": RESULTS[(self.language, self.connected)],
            "cycle": self.cycle,
            "time": provider_time(self.connected_at, zone) if self.connected else "",
            "start_time": provider_time(self.started_at, zone),
            "end_time": provider_time(self.ended_at, zone),
            "phone": self.national,
            "second": self.seconds,
            "countryCode": self.country_code,
            "messageid": self.messageid,
            "customer_price": float(price),
            "show_phone": self.show_phone,
            "size": self.size,
        }
        if self.service == "group_call":
            row["basic_price"] = float(self.basic_price or 0)
            row["ivr_result"] = int(self.ivr_result) if self.ivr_result else ""
        else:
            row["voice_type"] = 1 if self.service == "verification" else 2
        return row

    def dr_fields(self, zone: ZoneInfo) -> dict[str, str]:
        fields = {
            "phone": self.country_code + self.national,
            "countryCode": self.country_code,
            # "connection duration": here the whole call, ringing included; billing and the
            # call event follow `second`, so the two differ as they may at the provider.
            "duration": str(int((self.ended_at - self.started_at).total_seconds())),
            "voice_type": "0" if self.service == "group_call" else "1",
            "messageid": str(self.messageid),
            "second": str(self.seconds),
            "cycle": str(self.cycle),
            "size": str(self.size),
            "customer_price": str(self.unit_price),
            "start_time": provider_time(self.started_at, zone),
            "end_time": provider_time(self.ended_at, zone),
            "result": RESULTS[(self.language, self.connected)],
            "hangup_cause": self.hangup_cause,
            "hangup_disposition": self.hangup_disposition,
        }
        if self.service == "group_call":
            fields["basic_price"] = str(self.basic_price)
            fields["ivr_result"] = self.ivr_result
        elif self.record_url:
            fields["record_url"] = self.record_url
        return fields

    def events(self, zone: ZoneInfo) -> list[dict[str, Any]]:
        """The call's events as the merge gives them when its provisional CDR, its settled CDR
        and its DR arrive in turn: what the worker emits for this call."""
        service = 0 if self.service == "group_call" else 1
        state: CallState | None = None
        events = []
        for seen, at in (
            (normalize.from_cdr(self.cdr_row(zone, False), service, zone),
             self.ended_at + timedelta(minutes=5)),
            (normalize.from_cdr(self.cdr_row(zone, True), service, zone),
             self.ended_at + timedelta(minutes=30)),
            (normalize.from_dr(self.dr_fields(zone), zone), self.ended_at),
        ):  # fmt: skip
            state, event = merge(state, seen, at)
            if event is not None:
                events.append(event)
        return events


@dataclass(frozen=True)
class World:
    """`rate` messages per second from `origin`; each message is one to four calls."""

    seed: int
    origin: datetime
    rate: float
    max_seconds: int = 180

    def message_time(self, message: int) -> datetime:
        return self.origin + timedelta(seconds=message / self.rate)

    def first_message_at_or_after(self, moment: datetime) -> int:
        return max(0, -int(-((moment - self.origin).total_seconds() * self.rate) // 1))

    def calls(self, message: int) -> list[Call]:
        rng = random.Random(self.seed * 1_000_003 + message)  # noqa: S311 - not for security
        service = rng.choice(("group_call", "group_call", "verification", "notification"))
        legs = rng.randint(2, 4) if service == "group_call" else 1
        started = self.message_time(message)
        calls = []
        for leg in range(legs):
            country, prefix, digits = rng.choice(COUNTRIES)
            connected = rng.random() < 0.7
            seconds = rng.randint(1, self.max_seconds) if connected else 0
            cause, disposition = (
                ("NORMAL_CLEARING", rng.choice(("send_bye", "recv_bye")))
                if connected
                else rng.choice(FAILED_CAUSES)
            )
            calls.append(
                Call(
                    message=message,
                    leg=leg,
                    service=service,
                    messageid=700000 + message,
                    cdr_id=10_000_000 + message * 8 + leg,
                    country_code=country,
                    national=prefix + "".join(rng.choice("0123456789") for _ in range(digits)),
                    started_at=started + timedelta(milliseconds=rng.randint(0, 900)),
                    connected=connected,
                    seconds=seconds,
                    cycle=rng.choice((1, 6, 20, 60)),
                    unit_price=Decimal(rng.choice(("0.012", "0.036", "0.05", "0.0075"))),
                    basic_price=Decimal("0.005") if service == "group_call" else None,
                    language=rng.choice(("en", "en", "zh")),
                    hangup_cause=cause,
                    hangup_disposition=disposition,
                    ivr_result=rng.choice(("", "1", "2")) if service == "group_call" else "",
                    record_url=(
                        f"https://sandbox.invalid/records/{message}-{leg}.mp3"
                        if service == "verification" and connected
                        else ""
                    ),
                    show_phone=rng.choice(("085944247", "1547822456")),
                )
            )
        return calls

    def endings(self, since: datetime) -> Iterator[Call]:
        """Every call that ends at or after `since`, in the order they end: those in progress
        at `since` first, so DRs flow from the start, not once the next message's calls end."""
        message = self.first_message_at_or_after(since - timedelta(seconds=self.max_seconds + 6))
        ending: list[tuple[datetime, int, int, Call]] = []
        while True:
            while not ending or self.message_time(message) <= ending[0][0]:
                for call in self.calls(message):
                    if call.ended_at >= since:
                        heapq.heappush(ending, (call.ended_at, call.message, call.leg, call))
                message += 1
            yield heapq.heappop(ending)[3]

    def calls_between(self, start: datetime, end: datetime) -> Iterator[Call]:
        """Calls whose start_time falls in [start, end]."""
        message = self.first_message_at_or_after(start - timedelta(seconds=1))
        while self.message_time(message) <= end:
            for call in self.calls(message):
                if start <= call.started_at.replace(microsecond=0) <= end:
                    yield call
            message += 1


BROKEN: dict[str, tuple[dict[str, Any] | bytes, dict[str, str]]] = {
    "gzip": (b"\x1f\x8b\x08\x00 not gzip at all", {"Content-Encoding": "gzip"}),
    "html": (b"<html><body>502 Bad Gateway</body></html>", {}),
    "shape": ({"code": "1", "info": ["rows"]}, {}),
    "multiple": ({"code": "0", "msg": "multiple requests, please slow down"}, {}),
}


@dataclass
class Sandbox:
    world: World
    appkey: str = "sandbox"
    secretkey: str = "sandbox"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    cdr_delay: timedelta = timedelta(seconds=2)
    settle_delay: timedelta = timedelta(seconds=10)
    push_to: str | None = None
    # Shares of calls whose DR push is lost (CDR-only) and whose CDR row the query API
    # never returns (DR-only), so a reconciliation has something to find; which calls is a
    # function of the seed.
    lost_pushes: float = 0.0
    unlisted: float = 0.0
    clock: Callable[[], datetime] = utcnow
    faults: list[str] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    pushed: int = 0
    _last_request: dict[str, float] = field(default_factory=dict)

    def _fate(self, call: Call) -> float:
        return random.Random(f"{self.world.seed}:{call.message}:{call.leg}").random()  # noqa: S311

    def pushes(self, call: Call) -> bool:
        """Whether the call's DR is pushed (else the push is lost: a CDR-only call)."""
        return self._fate(call) >= self.lost_pushes

    def lists(self, call: Call) -> bool:
        """Whether the query API returns the call's row (else a DR-only call)."""
        fate = self._fate(call)
        return not self.lost_pushes <= fate < self.lost_pushes + self.unlisted

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        """(HTTP status, JSON body or raw bytes, headers) for one CDR query."""
        arrived = time.monotonic()
        self.requests.append(arrived)
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "429":
                return 429, {"code": "0", "msg": "too many requests"}, {"Retry-After": "2"}
            if fault == "500":
                return 500, {"code": "0", "msg": "internal error"}, {}
            if fault in BROKEN:
                return 200, *BROKEN[fault]
            return 200, {"code": "0", "msg": "system busy"}, {}
        if form.get("appkey") != self.appkey or form.get("secretkey") != self.secretkey:
            return 200, {"code": "0", "msg": "appkey or secretkey error"}, {}
        previous = self._last_request.get(self.appkey)
        self._last_request[self.appkey] = arrived
        if previous is not None and arrived - previous < 1.0:
            return 200, {"code": "0", "msg": "request too frequent: one per second"}, {}
        try:
            service = int(form["voiceType"])
            start = parse_provider_time(form["start_time"], self.zone)
            end = parse_provider_time(form["end_time"], self.zone)
            page = int(form["page"])
            page_size = int(form["page_size"])
        except (KeyError, ValueError):
            return 200, {"code": "0", "msg": "parameter error"}, {}
        now = self.clock()
        if service not in (0, 1) or page < 1 or not 0 < page_size <= 1000 or end < start:
            return 200, {"code": "0", "msg": "parameter error"}, {}
        if end - start > MAX_WINDOW:
            return 200, {"code": "0", "msg": "time range cannot exceed 24 hours"}, {}
        if start < now - LOOKBACK:
            return 200, {"code": "0", "msg": "only the last 7 days can be queried"}, {}
        wanted = ("group_call",) if service == 0 else ("verification", "notification")
        visible = [
            call
            for call in self.world.calls_between(start, end)
            if call.service in wanted and call.ended_at + self.cdr_delay <= now and self.lists(call)
        ]
        rows = [
            call.cdr_row(self.zone, settled=call.ended_at + self.settle_delay <= now)
            for call in visible[(page - 1) * page_size : page * page_size]
        ]
        info = {"total": len(visible), "page": page, "pageSize": page_size, "rows": rows}
        return 200, {"code": "1", "info": info}, {}

    async def push_forever(self, http: httpx.AsyncClient) -> None:
        """Push each call's DR once, as the provider does, when the call ends (at once for
        the calls of the history, which ended before the sandbox started)."""
        assert self.push_to is not None
        for call in self.world.endings(self.world.origin):
            wait = (call.ended_at - self.clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.pushes(call):
                continue
            try:
                await http.post(self.push_to, data=call.dr_fields(self.zone))
                self.pushed += 1
            except httpx.HTTPError as exc:
                log.warning("dr push failed, not retried", extra={"error": type(exc).__name__})


def create_app(sandbox: Sandbox) -> Starlette:
    async def query(request: Request) -> Response:
        form = await request.form()
        status, body, headers = sandbox.answer({k: str(v) for k, v in form.items()})
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return Response(content, status, headers, media_type="application/json")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if sandbox.push_to is None:
            yield
            return
        async with httpx.AsyncClient(timeout=10) as http:
            pusher = asyncio.create_task(sandbox.push_forever(http))
            yield
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    return Starlette(
        routes=[Route("/api/voiceSms/getVoiceCdr", query, methods=["POST"])], lifespan=lifespan
    )
