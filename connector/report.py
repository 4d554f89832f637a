"""`nxcloud-connector reconcile`: the reconciliation of some days on a screen (a table, JSON
or CSV), and the calls behind a number (`--calls KIND`), for people."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, TextIO

import orjson

from connector import reconciliation as rec
from connector import replay, wire
from connector.errors import ConfigError
from connector.schedule import Checkpoint
from connector.settings import Settings
from connector.topics import TopicNames

COLUMNS = (
    ("day", 10), ("service", 28), ("country", 7), ("status", 6), ("calls", 7), ("matched", 7),
    ("cdr-only", 8), ("dr-only", 7), ("awaiting dr/cdr", 15), ("mismatched", 10),
    ("within tol.", 11), ("cost", 12), ("dr cost", 12), ("cdr cost", 12),
    ("cost mismatch", 13), ("amount", 10),
)  # fmt: skip


def parse_day(text: str, today: date) -> date:
    words = {"today": today, "yesterday": today - timedelta(days=1)}
    if text in words:
        return words[text]
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a day (YYYY-MM-DD, today or yesterday): {text!r}") from None


def days_between(first: date, last: date) -> list[date]:
    if last < first:
        raise ConfigError(f"--until {last} is before --since {first}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def _read(settings: Settings, topic: str, since: datetime | None = None) -> list[Any]:
    """Every record of `topic` (stored since `since`), as the log holds them now."""
    progress = replay.Progress(io.StringIO())
    return [record async for record in replay.scan(settings, topic, since, None, progress)]


async def records(settings: Settings, topic: str, days: Iterable[date]) -> list[dict[str, Any]]:
    """The latest record of each group of `days`, sorted by day, service and country."""
    wanted = {day.isoformat() for day in days}
    latest: dict[str, dict[str, Any]] = {}
    for record in await _read(settings, topic):
        if record.value is not None and record.key is not None:
            latest[record.key.decode()] = orjson.loads(wire.payload(record.value))
    found = [value for value in latest.values() if value["day"] in wanted]
    return sorted(found, key=lambda r: (r["day"], r["service"], r["country_code"]))


def _cells(record: Mapping[str, Any], day: str, service: str, country: str) -> list[str]:
    return [
        day, service, country, record["status"], str(record["calls"]), str(record["matched"]),
        str(record["cdr_only"]), str(record["dr_only"]),
        f"{record['awaiting_dr']}/{record['awaiting_cdr']}",
        str(record["agreement"]["mismatched"]), str(record["agreement"]["within_tolerance"]),
        record["cost"], record["dr_cost"],
        record["cdr_cost"] + ("" if record["cdr_settled"] else "*"),
        str(record["cost_mismatch"]["calls"]), record["cost_mismatch"]["amount"],
    ]  # fmt: skip


def _line(cells: list[str]) -> str:
    parts = []
    for (name, width), cell in zip(COLUMNS, cells, strict=True):
        parts.append(cell.ljust(width) if name in ("day", "service", "country", "status")
                     else cell.rjust(width))  # fmt: skip
    return "  ".join(parts).rstrip()


def table(found: list[dict[str, Any]], out: TextIO) -> None:
    """One row per service and country, a total per day, and one for the range."""
    print(_line([name for name, _ in COLUMNS]), file=out)
    days = sorted({r["day"] for r in found})
    for day in days:
        mine = [r for r in found if r["day"] == day]
        for record in mine:
            print(_line(_cells(record, day, record["service"], record["country_code"])), file=out)
        print(_line(_cells(rec.totals(mine), day, "total", "")), file=out)
    if len(days) > 1:
        print(_line(_cells(rec.totals(found), "all days", "total", "")), file=out)
    notes = ["open: the figures can still change; final: NXCloud can no longer change them"]
    if any(not r["cdr_settled"] for r in found):
        notes.append("*: CDR costs not all settled yet (their slots are still polled again)")
    if found:
        first = found[0]
        notes.append(f"days in {first['timezone']}; tolerance: second "
                     f"±{first['tolerance']['seconds']} s, cost {first['tolerance']['cost']}; "
                     f"last written {max(r['updated_at'] for r in found)}")  # fmt: skip
    for note in notes:
        print(note, file=out)


def as_json(found: list[dict[str, Any]]) -> bytes:
    days = sorted({r["day"] for r in found})
    by_day = {day: rec.totals(r for r in found if r["day"] == day) for day in days}
    return orjson.dumps(
        {"records": found, "totals": {"days": by_day, "all": rec.totals(found)}},
        option=orjson.OPT_INDENT_2,
    )


def _flat(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, Mapping):
            flat.update(_flat(item, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = item
    return flat


def as_csv(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    """One line per row, nested fields as dotted columns (`fields.cycles.mismatched`)."""
    flat = [_flat(row) for row in rows]
    names = list(dict.fromkeys(name for row in flat for name in row))
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)


async def checkpoint(settings: Settings, names: TopicNames) -> Checkpoint | None:
    latest = None
    for record in await _read(settings, names.poller_state):
        if record.key == settings.account.encode() and record.value:
            latest = Checkpoint.from_json(record.value)
    return latest


async def calls(
    settings: Settings, names: TopicNames, days: list[date], kind: str, now: datetime
) -> list[dict[str, Any]]:
    """The calls of `days` counted under `kind` at `now`: each call's latest event, and
    the figures its own record gives."""
    rules = rec.Rules.of(settings)
    # A call's events are written once it is first seen: never before its day starts
    # (a day of margin for clocks).
    since = rec.day_bounds(min(days), rules.zone)[0] - timedelta(days=1)
    wanted = set(days)
    latest: dict[str, tuple[rec.Part, dict[str, Any]]] = {}
    for record in await _read(settings, names.call_events, since):
        if record.value is None:
            continue
        event = orjson.loads(wire.payload(record.value))
        piece = rec.part(event, rules)
        if piece.newer_than(latest.get(piece.call_id, (None,))[0]):
            latest[piece.call_id] = (piece, event)
    polled = rec.polled_through(await checkpoint(settings, names))
    found = []
    for piece, event in latest.values():
        if piece.group.day not in wanted:
            continue
        slots: rec.Slots = {}
        rec.put(slots, piece)
        own = rec.record(piece.group, slots, now=now, polled=polled, rules=rules)
        if rec.counted_in(own, kind):
            found.append({"kind": kind, "day": own["day"], **event})
    return sorted(found, key=lambda e: (e["day"], e["service"], e["country_code"],
                                        e["started_at"] or "", e["call_id"]))  # fmt: skip


CALL_COLUMNS = ("day", "service", "country", "started_at", "message_id", "phone", "call_id",
                "sources", "dr second/size/cost", "cdr second/size/cost")  # fmt: skip


def _report(report: Mapping[str, Any] | None) -> str:
    if report is None:
        return "-"
    return f"{report['duration_seconds']}/{report['cycles']}/{report['cost']}"


def call_rows(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a support engineer acts on, per call."""
    return [
        {"day": e["day"], "service": e["service"], "country": e["country_code"],
         "started_at": e["started_at"], "message_id": e["message_id"], "phone": e["phone"],
         "call_id": e["call_id"], "sources": "+".join(e["sources"]),
         "dr second/size/cost": _report((e.get("reports") or {}).get("dr")),
         "cdr second/size/cost": _report((e.get("reports") or {}).get("cdr"))}
        for e in found
    ]  # fmt: skip


def call_table(found: list[dict[str, Any]], out: TextIO) -> None:
    rows = call_rows(found)
    widths = {name: max([len(name), *(len(str(row[name])) for row in rows)])
              for name in CALL_COLUMNS}  # fmt: skip
    print("  ".join(name.ljust(widths[name]) for name in CALL_COLUMNS).rstrip(), file=out)
    for row in rows:
        print("  ".join(str(row[n]).ljust(widths[n]) for n in CALL_COLUMNS).rstrip(), file=out)
    print(f"{len(rows)} calls", file=out)


def show(
    found: list[dict[str, Any]], *, fmt: str, out: TextIO = sys.stdout, listing: bool = False
) -> None:
    if fmt == "json":
        if listing:
            for event in found:
                out.write(orjson.dumps(event).decode() + "\n")
        else:
            out.write(as_json(found).decode() + "\n")
    elif fmt == "csv":
        as_csv(call_rows(found) if listing else found, out)
    elif listing:
        call_table(found, out)
    else:
        table(found, out)
