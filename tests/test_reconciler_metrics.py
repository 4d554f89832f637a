"""The reconciler's figures as metrics: three day labels, never a date."""

from __future__ import annotations

from datetime import date

from prometheus_client import generate_latest

from connector.reconciler.metrics import ReconcilerMetrics, days


def record(day: str, service: str, settled: bool, calls: int, amount: str) -> dict[str, object]:
    return {
        "day": day, "service": service, "cdr_settled": settled, "calls": calls, "matched": calls,
        "cdr_only": 1, "dr_only": 0, "awaiting_dr": 0, "awaiting_cdr": 0,
        "agreement": {"mismatched": 2}, "cost_mismatch": {"calls": 1, "amount": amount},
    }  # fmt: skip


def test_today_the_last_closed_and_the_last_settled_day_by_service() -> None:
    today = date(2026, 12, 7)
    records = [
        record("2026-12-07", "group_call", False, 10, "0"),
        record("2026-12-06", "group_call", False, 20, "0.5"),
        record("2026-12-05", "group_call", True, 30, "0.25"),
        record("2026-12-05", "notification", True, 5, "0.125"),
        record("2026-12-04", "group_call", True, 40, "9"),
    ]
    assert days(records, today) == {"today": today, "last_closed": date(2026, 12, 6),
                                    "last_settled": date(2026, 12, 5)}  # fmt: skip
    metrics = ReconcilerMetrics()
    metrics.show(records, today)
    text = generate_latest(metrics.registry).decode()
    assert 'nxcloud_reconciler_calls{day="today",service="group_call"} 10.0' in text
    assert 'nxcloud_reconciler_calls{day="last_settled",service="notification"} 5.0' in text
    assert ('nxcloud_reconciler_cost_mismatch_amount{day="last_settled",service="group_call"} '
            "0.25") in text  # fmt: skip
    assert 'nxcloud_reconciler_cdr_settled{day="last_closed"} 0.0' in text
    assert "2026-12" not in text
    metrics.hide()
    assert "nxcloud_reconciler_calls{" not in generate_latest(metrics.registry).decode()
