"""The reconciler's Prometheus metrics: its progress, and the figures of three days only
(`day` is `today`, `last_closed` or `last_settled`, never a date), per service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from connector import release

# gauge name: (help, how a record gives it)
FIGURES: Final = {
    "calls": "Calls of the day",
    "matched": "Calls with a DR and a CDR row",
    "cdr_only": "CDR rows without a DR past the DR grace: pushes that never reached us",
    "dr_only": "DRs without a CDR row once their five minutes were polled for good",
    "awaiting_dr": "CDR rows without a DR, within the DR grace",
    "awaiting_cdr": "DRs without a CDR row, their five minutes still polled again",
    "mismatched": "Matched calls whose reports disagree beyond the tolerance on a billing field",
    "cost_mismatch_calls": "Matched calls whose DR and settled CDR costs differ",
    "cost_mismatch_amount": "The sum of those differences, each taken positive (currency units)",
}


def _value(record: Mapping[str, Any], name: str) -> Decimal:
    if name == "mismatched":
        return Decimal(record["agreement"]["mismatched"])
    if name == "cost_mismatch_calls":
        return Decimal(record["cost_mismatch"]["calls"])
    if name == "cost_mismatch_amount":
        return Decimal(record["cost_mismatch"]["amount"])
    return Decimal(record[name])


def days(records: Iterable[Mapping[str, Any]], today: date) -> dict[str, date]:
    """Which dates the labels name: today, the day before, and the latest day before today
    whose CDR rows are all settled."""
    found = {"today": today, "last_closed": today - timedelta(days=1)}
    by_day: dict[str, list[bool]] = {}
    for record in records:
        by_day.setdefault(record["day"], []).append(bool(record["cdr_settled"]))
    settled = [day for day, flags in by_day.items()
               if all(flags) and date.fromisoformat(day) < today]  # fmt: skip
    if settled:
        found["last_settled"] = date.fromisoformat(max(settled))
    return found


class ReconcilerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.build_info = release.build_info(self.registry)
        self.active = Gauge(
            "nxcloud_reconciler_active", "1 while this replica is the one that writes",
            registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "nxcloud_reconciler_events", "Call events read", registry=self.registry
        )
        self.unreadable = Counter(
            "nxcloud_reconciler_unreadable_events",
            "Call events the reconciler could not read (skipped; logged)",
            registry=self.registry,
        )
        self.records = Counter(
            "nxcloud_reconciler_records", "Reconciliation records written",
            registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "nxcloud_reconciler_lag",
            "Call events from the next one to read to the end of the topic",
            registry=self.registry,
        )
        self.settled = Gauge(
            "nxcloud_reconciler_cdr_settled",
            "1 when every CDR row of the day was polled for the last time",
            ["day"],
            registry=self.registry,
        )
        self.figures = {
            name: Gauge(f"nxcloud_reconciler_{name}", text, ["day", "service"],
                        registry=self.registry)
            for name, text in FIGURES.items()
        }  # fmt: skip

    def show(self, records: Iterable[Mapping[str, Any]], today: date) -> None:
        """The figures of the labelled days, from the latest records (the writer's)."""
        found = list(records)
        labelled = days(found, today)
        for gauge in (*self.figures.values(), self.settled):
            gauge.clear()
        for label, day in labelled.items():
            mine = [r for r in found if r["day"] == day.isoformat()]
            self.settled.labels(label).set(1 if mine and all(r["cdr_settled"] for r in mine) else 0)
            for name, gauge in self.figures.items():
                for service in sorted({r["service"] for r in mine}):
                    total = sum((_value(r, name) for r in mine if r["service"] == service),
                                Decimal(0))  # fmt: skip
                    gauge.labels(label, service).set(float(total))

    def hide(self) -> None:
        """A replica that does not write serves no figures (the writer's are the ones)."""
        for gauge in (*self.figures.values(), self.settled):
            gauge.clear()
