"""A day of calls of every kind reconciliation tells apart, with the figures it must give,
worked out by hand (not by the code under test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector import cdr, dr, identity, normalize
from connector import reconciliation as rec
from connector.local.sandbox import Call
from connector.merge import CallState, merge
from connector.normalize import Observation
from tests.support import ZONE


def call(letter: str, start: datetime, **changes: Any) -> Call:
    """A connected group call to China: 30 s billed in one 60 s cycle at 0.036."""
    number = ord(letter)
    values: dict[str, Any] = {
        "message": number, "leg": 0, "service": "group_call", "messageid": 900000 + number,
        "cdr_id": 50_000_000 + number, "country_code": "86", "national": f"1502000{number:04d}",
        "started_at": start + timedelta(minutes=number - ord("A")), "connected": True,
        "seconds": 30, "cycle": 60, "unit_price": Decimal("0.036"),
        "basic_price": Decimal("0.005"), "language": "en", "hangup_cause": "NORMAL_CLEARING",
        "hangup_disposition": "send_bye", "ivr_result": "", "record_url": "",
        "show_phone": "085944247",
    }  # fmt: skip
    return Call(**{**values, **changes})


def calls(start: datetime) -> dict[str, Call]:
    """A: matched, B: matched, C: CDR only, D: DR only, E: the settled CDR cost differs,
    F: `second` off by one (within the tolerance), G: `second` and `size` differ, H: not
    connected; N: a notification to Brazil (its own group)."""
    found = {letter: call(letter, start) for letter in "ABCDEFG"}
    found["H"] = call("H", start, connected=False, seconds=0, hangup_cause="NO_ANSWER",
                      hangup_disposition="send_cancel")  # fmt: skip
    found["N"] = call("N", start, service="notification", country_code="55",
                      national="85987050001", seconds=10, cycle=1,
                      unit_price=Decimal("0.012"), basic_price=None)  # fmt: skip
    return found


# What the settled CDR row says unlike the DR.
SETTLED_CHANGES: dict[str, dict[str, Any]] = {
    "E": {"customer_price": 0.05},
    "F": {"second": 31},
    "G": {"second": 75, "size": 2},
}
WITH_DR = "ABDEFGHN"
WITH_CDR = "ABCEFGHN"


def cdr_row(found: Call, letter: str, settled: bool) -> dict[str, Any]:
    row = found.cdr_row(ZONE, settled)
    return {**row, **SETTLED_CHANGES.get(letter, {})} if settled else row


def service_of(found: Call) -> int:
    return 0 if found.service == "group_call" else 1


def provisional(found: dict[str, Call]) -> Iterator[tuple[str, Observation, datetime]]:
    for letter in WITH_CDR:
        row = cdr_row(found[letter], letter, settled=False)
        at = found[letter].ended_at + timedelta(minutes=5)
        yield letter, normalize.from_cdr(row, service_of(found[letter]), ZONE), at


def settled(found: dict[str, Call]) -> Iterator[tuple[str, Observation, datetime]]:
    for letter in WITH_CDR:
        row = cdr_row(found[letter], letter, settled=True)
        at = found[letter].ended_at + timedelta(minutes=30)
        yield letter, normalize.from_cdr(row, service_of(found[letter]), ZONE), at


def receipts(found: dict[str, Call]) -> Iterator[tuple[str, Observation, datetime]]:
    for letter in WITH_DR:
        at = found[letter].ended_at
        yield letter, normalize.from_dr(found[letter].dr_fields(ZONE), ZONE), at


def cdr_records(found: dict[str, Call], settle: bool) -> list[tuple[bytes, bytes]]:
    """The poller's records of the CDR rows (provisional, or settled)."""
    records = []
    for letter in WITH_CDR:
        row = cdr_row(found[letter], letter, settle)
        started = found[letter].started_at
        window = cdr.Window(service_of(found[letter]), started - timedelta(minutes=5), started)
        fetched = found[letter].ended_at + timedelta(minutes=30 if settle else 5)
        records.append((identity.cdr_key(row), cdr.raw_record(row, window, 1, fetched, "t")))
    return records


def dr_records(found: dict[str, Call]) -> list[tuple[bytes, bytes]]:
    """The receiver's records of the DRs."""
    records = []
    for number, letter in enumerate(WITH_DR):
        fields = found[letter].dr_fields(ZONE)
        arrival = dr.Arrival(f"{number + 1:032x}", found[letter].ended_at, "127.0.0.1", "t",
                             "POST", "")  # fmt: skip
        records.append((identity.dr_key(fields), dr.raw_record(fields, arrival)))
    return records


TOLERANCE = {"seconds": 1, "cost": "0"}
# The group call group once the DR grace has passed and the hours are polled for good.
GROUP_CALLS: dict[str, Any] = {
    "calls": 8, "matched": 6, "cdr_only": 1, "dr_only": 1, "awaiting_dr": 0,
    "awaiting_cdr": 0, "connected": 7, "not_connected": 1,
    "seconds": 210, "cycles": 7,
    "cost": "0.257", "cost_final": "0.221", "calls_cost_not_final": 1,
    "dr_cost": "0.221", "cdr_cost": "0.271",
    "cost_check": {"exact": 4, "within_tolerance": 0, "mismatched": 2, "missing": 0,
                   "pending": 0},
    "cost_mismatch": {"calls": 2, "amount": "0.05", "difference": "0.05"},
    "agreement": {"exact": 4, "within_tolerance": 1, "mismatched": 1, "missing": 0},
    "fields": {
        "duration_seconds": {"exact": 4, "within_tolerance": 1, "mismatched": 1, "missing": 0},
        "cycle_seconds": {"exact": 6, "within_tolerance": 0, "mismatched": 0, "missing": 0},
        "cycles": {"exact": 5, "within_tolerance": 0, "mismatched": 1, "missing": 0},
        "connected": {"exact": 6, "within_tolerance": 0, "mismatched": 0, "missing": 0},
    },
    "tolerance": TOLERANCE, "cdr_settled": True,
}  # fmt: skip
NOTIFICATIONS: dict[str, Any] = {
    "calls": 1, "matched": 1, "cdr_only": 0, "dr_only": 0, "awaiting_dr": 0,
    "awaiting_cdr": 0, "connected": 1, "not_connected": 0, "seconds": 10, "cycles": 10,
    "cost": "0.12", "cost_final": "0.12", "calls_cost_not_final": 0, "dr_cost": "0.12",
    "cdr_cost": "0.12",
    "cost_check": {"exact": 1, "within_tolerance": 0, "mismatched": 0, "missing": 0,
                   "pending": 0},
    "cost_mismatch": {"calls": 0, "amount": "0", "difference": "0"},
    "agreement": {"exact": 1, "within_tolerance": 0, "mismatched": 0, "missing": 0},
    "fields": {name: {"exact": 1, "within_tolerance": 0, "mismatched": 0, "missing": 0}
               for name in ("duration_seconds", "cycle_seconds", "cycles", "connected")},
    "tolerance": TOLERANCE, "cdr_settled": True,
}  # fmt: skip


def subset(record: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The record's values of the expected figures' names."""
    return {name: record[name] for name in expected}


def key_of(record: dict[str, Any]) -> str:
    return f"{record['day']}|{record['service']}|{record['country_code']}"


def latest_records(values: list[Any]) -> dict[str, dict[str, Any]]:
    """The latest record per key, as a compacted topic's reader keeps them."""
    return {key_of(value): value for value in values}


def checkpoint(polled_to: datetime) -> bytes:
    """A poller checkpoint that has polled both services up to `polled_to`, for good."""
    from connector.schedule import Checkpoint

    return Checkpoint({0: polled_to, 1: polled_to}).to_json()


def yesterday_at_ten(now: datetime) -> datetime:
    """10:00 of the day before `now`, in the provider's zone."""
    local = now.astimezone(ZONE)
    return (local - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)


# A fixed day of them, reconciled by the pure core (no broker).
START = datetime(2026, 11, 23, 10, 0, tzinfo=ZONE)  # 02:00 UTC
DAY = date(2026, 11, 23)
RULES = rec.Rules(zone=ZONE, dr_grace=timedelta(hours=4), final_after=timedelta(days=7, minutes=2))
GROUP = rec.Group(DAY, "group_call", "86")
NOTIFIED = rec.Group(DAY, "notification", "55")
AFTER_GRACE = START + timedelta(hours=6)
POLLED = {0: datetime(2026, 11, 24, tzinfo=UTC), 1: datetime(2026, 11, 24, tzinfo=UTC)}


def latest_events(*phases: list[tuple[str, Observation, datetime]]) -> dict[str, dict[str, Any]]:
    """Each call's last event once the phases' observations are merged in turn."""
    states: dict[str, CallState] = {}
    latest: dict[str, dict[str, Any]] = {}
    for phase in phases:
        for letter, observation, at in phase:
            state, event = merge(states.get(letter), observation, at)
            states[letter] = state
            if event is not None:
                latest[letter] = event
    return latest


def reconcile(
    events: dict[str, dict[str, Any]], now: datetime, polled: dict[int, datetime]
) -> dict[rec.Group, dict[str, Any]]:
    groups: dict[rec.Group, rec.Slots] = {}
    for event in events.values():
        piece = rec.part(event, RULES)
        rec.put(groups.setdefault(piece.group, {}), piece)
    return {group: rec.record(group, slots, now=now, polled=polled, rules=RULES)
            for group, slots in groups.items()}  # fmt: skip


def the_day() -> dict[str, dict[str, Any]]:
    found = calls(START)
    return latest_events(list(provisional(found)), list(receipts(found)), list(settled(found)))
