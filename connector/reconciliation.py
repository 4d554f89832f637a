"""Reconciliation: per provider-local day, service and country, what NXCloud reported
against what reached us. Pure: the clock and the poller's progress are arguments.

A call's `Part` is computed from its latest call event alone: its group (day, service,
country), the five minutes it started in (its slot), and a `Tally` of what it adds. A
group's figures are the sum of its calls' parts, so a call that changes takes its old
part out and puts its new one in, and a rebuild from the call events gives the same sums.
What depends on the clock (a call with CDR rows and no DR is CDR-only once the DR grace
has passed) or on the poller (a DR without a CDR row is DR-only, and a CDR cost settled,
once the provider's records of its slot were polled for the last time) is kept per slot
and decided when a `record` is made; the rest is kept once per group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from connector.cdr import LOOKBACK
from connector.clock import rfc3339
from connector.normalize import GROUP_CALL
from connector.schedule import Checkpoint
from connector.settings import Settings

SCHEMA_VERSION: Final = 1
SLOT: Final = timedelta(minutes=5)
# The key of a group's figures that do not depend on time (the others are per slot).
EVERY: Final = datetime(1, 1, 1, tzinfo=UTC)
# What each source reports on its own (the call event's `reports`), compared field by field.
FIELDS: Final = ("duration_seconds", "cycle_seconds", "cycles", "connected")
CLASSES: Final = ("exact", "within_tolerance", "mismatched", "missing")
MONEY: Final = frozenset({"cost", "cost_final", "dr_cost", "cdr_cost", "mismatch_amount",
                          "mismatch_difference"})  # fmt: skip
# The calls behind a number (`reconcile --calls KIND`), and the figure each one counts in.
KINDS: Final = {
    "matched": ("matched",),
    "cdr-only": ("cdr_only",),
    "dr-only": ("dr_only",),
    "awaiting-dr": ("awaiting_dr",),
    "awaiting-cdr": ("awaiting_cdr",),
    "mismatched": ("agreement", "mismatched"),
    "within-tolerance": ("agreement", "within_tolerance"),
    "field-missing": ("agreement", "missing"),
    "cost-mismatch": ("cost_check", "mismatched"),
    "cost-pending": ("cost_check", "pending"),
    "all": ("calls",),
}

Tally = dict[str, int | Decimal]
# What a call adds only once the provider's records of its slot are settled and polled.
SETTLED: Final = (*(f"cost_check.{c}" for c in CLASSES), "mismatch_amount", "mismatch_difference")
# What is judged per slot: the rest of a call's tally does not depend on time.
TIMED: Final = frozenset({"cdr_without_dr", "dr_without_cdr", "matched", *SETTLED})


@dataclass(frozen=True)
class Rules:
    """What the figures depend on besides the calls: the account's zone, how long a DR may
    take (`NXCLOUD_WORKER_DR_GRACE_SECONDS`), when a day can no longer change (the CDR
    API's 7 days and the poller's settle delay after its end), and the tolerances."""

    zone: ZoneInfo
    dr_grace: timedelta
    final_after: timedelta
    seconds_tolerance: int = 1
    cost_tolerance: Decimal = Decimal(0)

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        return cls(
            zone=settings.nxcloud_timezone,
            dr_grace=timedelta(seconds=settings.worker_dr_grace_seconds),
            final_after=LOOKBACK + timedelta(seconds=settings.poller_settle_seconds),
            seconds_tolerance=settings.reconcile_seconds_tolerance,
            cost_tolerance=settings.reconcile_cost_tolerance,
        )


@dataclass(frozen=True, order=True)
class Group:
    day: date
    service: str
    country_code: str

    @property
    def key(self) -> str:
        """The record's key on the reconciliation topic: `day|service|country_code`."""
        return f"{self.day.isoformat()}|{self.service}|{self.country_code}"

    @classmethod
    def parse(cls, key: str) -> Group:
        day, service, country = key.split("|", 2)
        return cls(date.fromisoformat(day), service, country)


@dataclass(frozen=True)
class Part:
    """One call's part in its group: the slot it started in (UTC) and what it adds."""

    call_id: str
    group: Group
    slot: datetime
    updated_at: datetime
    revision: int
    tally: Tally

    def newer_than(self, other: Part | None) -> bool:
        """A later revision of the call (or the call started again with a later
        `updated_at`): an older revision or an exact repeat changes nothing."""
        return other is None or (self.updated_at, self.revision) > (
            other.updated_at,
            other.revision,
        )


def shortest(amount: Decimal) -> str:
    """Money as every money field spells it: the shortest decimal form."""
    return "0" if amount.is_zero() else format(amount.normalize(), "f")


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _money(text: Any) -> Decimal | None:
    return None if text is None else Decimal(text)


def compare(name: str, dr: Any, cdr: Any, rules: Rules) -> str:
    """How the two reports of one field agree: exact, within the tolerance (`second` only:
    a cycle, a cycle count or a result off by any amount bills differently), mismatched,
    or missing on one side."""
    if dr is None or cdr is None:
        return "missing"
    if dr == cdr:
        return "exact"
    if name == "duration_seconds" and abs(dr - cdr) <= rules.seconds_tolerance:
        return "within_tolerance"
    return "mismatched"


def _compare_cost(dr: Decimal | None, cdr: Decimal | None, rules: Rules) -> str:
    if dr is None or cdr is None:
        return "missing"
    if dr == cdr:
        return "exact"
    return "within_tolerance" if abs(cdr - dr) <= rules.cost_tolerance else "mismatched"


def _worst(classes: Iterable[str]) -> str:
    found = set(classes)
    return next(c for c in ("mismatched", "missing", "within_tolerance", "exact") if c in found)


def part(event: Mapping[str, Any], rules: Rules) -> Part:
    """What the call of `event` (its latest revision) adds to its group."""
    started = _moment(event["started_at"]) or _moment(event["first_seen_at"])
    assert started is not None
    sources, billing = set(event["sources"]), event["billing"]
    reports = event.get("reports") or {}
    dr, cdr = reports.get("dr") or {}, reports.get("cdr") or {}
    tally: Tally = {"calls": 1}

    def add(name: str, amount: int | Decimal | None) -> None:
        if amount:
            tally[name] = tally.get(name, 0) + amount

    if sources == {"dr", "cdr"}:
        add("matched", 1)
        classes = [compare(name, dr.get(name), cdr.get(name), rules) for name in FIELDS]
        for name, found in zip(FIELDS, classes, strict=True):
            add(f"fields.{name}.{found}", 1)
        add(f"agreement.{_worst(classes)}", 1)
        dr_cost, cdr_cost = _money(dr.get("cost")), _money(cdr.get("cost"))
        checked = _compare_cost(dr_cost, cdr_cost, rules)
        add(f"cost_check.{checked}", 1)
        if checked == "mismatched" and dr_cost is not None and cdr_cost is not None:
            add("mismatch_amount", abs(cdr_cost - dr_cost))
            add("mismatch_difference", cdr_cost - dr_cost)
    else:
        add("dr_without_cdr" if "dr" in sources else "cdr_without_dr", 1)
    add("connected" if event["connected"] else "not_connected", event["connected"] is not None)
    add("seconds", event["duration_seconds"])
    add("cycles", billing["cycles"])
    cost = _money(billing["cost"])
    add("cost", cost)
    add("cost_final" if billing["cost_final"] else "calls_cost_not_final",
        cost if billing["cost_final"] else 1)  # fmt: skip
    add("dr_cost", _money(dr.get("cost")))
    add("cdr_cost", _money(cdr.get("cost")))
    return Part(
        call_id=event["call_id"],
        group=Group(started.astimezone(rules.zone).date(), event["service"], event["country_code"]),
        slot=_slot(started),
        updated_at=_moment(event["updated_at"]) or started,
        revision=int(event["revision"]),
        tally=tally,
    )


def combine(into: Tally, tally: Mapping[str, int | Decimal], sign: int = 1) -> None:
    """`into` plus (or, with sign -1, less) `tally`; a figure that comes to zero goes."""
    for name, amount in tally.items():
        total = into.get(name, 0) + sign * amount
        if total:
            into[name] = total
        else:
            into.pop(name, None)


Slots = dict[datetime, Tally]


def _slot(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 5, second=0, microsecond=0)


def put(slots: Slots, piece: Part, sign: int = 1) -> None:
    """A call's part added to (sign -1: taken from) its group's figures: what depends on
    time in its slot, the rest once for the group."""
    for key, names in ((EVERY, False), (piece.slot, True)):
        tally = slots.setdefault(key, {})
        combine(tally, {n: v for n, v in piece.tally.items() if (n in TIMED) == names}, sign)
        if not tally:
            del slots[key]


def settle(slots: Slots) -> Slots:
    """A final group's figures with its slots merged into one: at the end of the provider's
    7 days every slot is judged alike, so the record stays the same, and smaller."""
    timed = sorted(slot for slot in slots if slot != EVERY)
    if len(timed) < 2:
        return slots
    merged: Tally = {}
    for slot in timed:
        combine(merged, slots[slot])
    kept = {EVERY: slots.get(EVERY, {}), timed[0]: merged}
    return {key: tally for key, tally in kept.items() if tally}


def polled_through(checkpoint: Checkpoint | None) -> dict[int, datetime]:
    """Per service (0 group calls, 1 the others), the moment before which every window
    was polled for the last time: the frontier, or the start of the oldest window still
    due a re-poll."""
    if checkpoint is None:
        return {}
    through = dict(checkpoint.frontier)
    for repoll in checkpoint.repolls:
        service = repoll.window.service
        if service in through:
            through[service] = min(through[service], repoll.window.start)
    return through


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The day's start and end in the provider's zone, as UTC."""
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def final_at(day: date, rules: Rules) -> datetime:
    return day_bounds(day, rules.zone)[1] + rules.final_after


def _count(tally: Mapping[str, int | Decimal], name: str) -> int:
    return int(tally.get(name, 0))


def _sum(tally: Mapping[str, int | Decimal], name: str) -> Decimal:
    return Decimal(tally.get(name, 0))


def record(
    group: Group,
    slots: Mapping[datetime, Mapping[str, int | Decimal]],
    *,
    now: datetime,
    polled: Mapping[int, datetime],
    rules: Rules,
) -> dict[str, Any]:
    """The group's reconciliation at `now` (without `updated_at`, which the writer adds)."""
    final = now >= final_at(group.day, rules)
    through = polled.get(0 if group.service == GROUP_CALL else 1)
    total: Tally = {}
    judged: Tally = {}
    for slot, tally in slots.items():
        combine(total, tally)
        if slot == EVERY:
            continue
        if now < slot + SLOT + rules.dr_grace:
            combine(judged, {"awaiting_dr": tally.get("cdr_without_dr", 0)})
        if final or (through is not None and through >= slot + SLOT):
            combine(judged, {f"settled.{name}": tally[name] for name in SETTLED if name in tally})
        else:
            combine(judged, {"awaiting_cdr": tally.get("dr_without_cdr", 0),
                             "cost_pending": tally.get("matched", 0)})  # fmt: skip
    end = day_bounds(group.day, rules.zone)[1]
    awaiting_dr, awaiting_cdr = _count(judged, "awaiting_dr"), _count(judged, "awaiting_cdr")
    return {
        "schema_version": SCHEMA_VERSION,
        "day": group.day.isoformat(),
        "timezone": rules.zone.key,
        "service": group.service,
        "country_code": group.country_code,
        "status": "final" if final else "open",
        "final_at": rfc3339(final_at(group.day, rules)),
        "cdr_settled": final or (through is not None and through >= end),
        "calls": _count(total, "calls"),
        "matched": _count(total, "matched"),
        "cdr_only": _count(total, "cdr_without_dr") - awaiting_dr,
        "dr_only": _count(total, "dr_without_cdr") - awaiting_cdr,
        "awaiting_dr": awaiting_dr,
        "awaiting_cdr": awaiting_cdr,
        "connected": _count(total, "connected"),
        "not_connected": _count(total, "not_connected"),
        "seconds": _count(total, "seconds"),
        "cycles": _count(total, "cycles"),
        "cost": shortest(_sum(total, "cost")),
        "cost_final": shortest(_sum(total, "cost_final")),
        "calls_cost_not_final": _count(total, "calls_cost_not_final"),
        "dr_cost": shortest(_sum(total, "dr_cost")),
        "cdr_cost": shortest(_sum(total, "cdr_cost")),
        "cost_check": {
            **{c: _count(judged, f"settled.cost_check.{c}") for c in CLASSES},
            "pending": _count(judged, "cost_pending"),
        },
        "cost_mismatch": {
            "calls": _count(judged, "settled.cost_check.mismatched"),
            "amount": shortest(_sum(judged, "settled.mismatch_amount")),
            "difference": shortest(_sum(judged, "settled.mismatch_difference")),
        },
        "agreement": {c: _count(total, f"agreement.{c}") for c in CLASSES},
        "fields": {
            name: {c: _count(total, f"fields.{name}.{c}") for c in CLASSES} for name in FIELDS
        },
        "tolerance": {
            "seconds": rules.seconds_tolerance,
            "cost": shortest(rules.cost_tolerance),
        },
    }


def figures(found: Mapping[str, Any]) -> dict[str, Any]:
    """A record without the moment it was written: what tells a change."""
    return {name: value for name, value in found.items() if name != "updated_at"}


def counted_in(found: Mapping[str, Any], kind: str) -> bool:
    """Whether a one-call record counts its call under `kind` (see KINDS)."""
    value: Any = found
    for name in KINDS[kind]:
        value = value[name]
    return bool(value)


NUMBERS: Final = (
    "calls", "matched", "cdr_only", "dr_only", "awaiting_dr", "awaiting_cdr", "connected",
    "not_connected", "seconds", "cycles", "calls_cost_not_final",
)  # fmt: skip
AMOUNTS: Final = ("cost", "cost_final", "dr_cost", "cdr_cost")


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several records (a day's, or a range's): final only if all are."""
    found = list(records)
    result: dict[str, Any] = {
        "status": "final" if found and all(r["status"] == "final" for r in found) else "open",
        "cdr_settled": bool(found) and all(r["cdr_settled"] for r in found),
    }
    for name in NUMBERS:
        result[name] = sum(int(r[name]) for r in found)
    for name in AMOUNTS:
        result[name] = shortest(sum((Decimal(r[name]) for r in found), Decimal(0)))
    for nested, classes in (("cost_check", (*CLASSES, "pending")), ("agreement", CLASSES)):
        result[nested] = {c: sum(int(r[nested][c]) for r in found) for c in classes}
    result["fields"] = {
        name: {c: sum(int(r["fields"][name][c]) for r in found) for c in CLASSES} for name in FIELDS
    }
    result["cost_mismatch"] = {
        "calls": sum(int(r["cost_mismatch"]["calls"]) for r in found),
        "amount": shortest(sum((Decimal(r["cost_mismatch"]["amount"]) for r in found),
                               Decimal(0))),
        "difference": shortest(sum((Decimal(r["cost_mismatch"]["difference"]) for r in found),
                                   Decimal(0))),
    }  # fmt: skip
    return result


# The reconciler's store: a call's part and a group's slots, as JSON.


def _tally_out(tally: Mapping[str, int | Decimal]) -> dict[str, Any]:
    return {name: str(v) if isinstance(v, Decimal) else v for name, v in tally.items()}


def _tally_in(raw: Mapping[str, Any]) -> Tally:
    return {name: Decimal(v) if name in MONEY else int(v) for name, v in raw.items()}


def encode_part(piece: Part) -> bytes:
    return orjson.dumps({
        "group": piece.group.key, "slot": piece.slot.isoformat(),
        "updated_at": piece.updated_at.isoformat(), "revision": piece.revision,
        "tally": _tally_out(piece.tally),
    })  # fmt: skip


def decode_part(call_id: str, data: bytes) -> Part:
    raw = orjson.loads(data)
    return Part(call_id, Group.parse(raw["group"]), datetime.fromisoformat(raw["slot"]),
                datetime.fromisoformat(raw["updated_at"]), raw["revision"],
                _tally_in(raw["tally"]))  # fmt: skip


def encode_slots(slots: Mapping[datetime, Mapping[str, int | Decimal]]) -> bytes:
    return orjson.dumps({hour.isoformat(): _tally_out(t) for hour, t in sorted(slots.items())})


def decode_slots(data: bytes) -> Slots:
    return {datetime.fromisoformat(h): _tally_in(t) for h, t in orjson.loads(data).items()}
