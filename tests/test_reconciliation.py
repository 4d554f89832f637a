"""Reconciliation's pure core: each call's part, the classes, the clock and the poller's
progress, open and final days, on a day of calls of every kind."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from connector import reconciliation as rec
from connector.cdr import Window
from connector.schedule import Checkpoint, Repoll
from tests.reconciliation_helpers import (
    AFTER_GRACE,
    DAY,
    GROUP,
    GROUP_CALLS,
    NOTIFICATIONS,
    NOTIFIED,
    POLLED,
    RULES,
    START,
    calls,
    latest_events,
    provisional,
    receipts,
    reconcile,
    settled,
    subset,
    the_day,
)
from tests.support import ZONE, valid


def test_a_day_of_every_kind_of_call_gives_the_figures_worked_out_by_hand() -> None:
    records = reconcile(the_day(), AFTER_GRACE, POLLED)
    assert set(records) == {GROUP, NOTIFIED}
    assert subset(records[GROUP], GROUP_CALLS) == GROUP_CALLS
    assert subset(records[NOTIFIED], NOTIFICATIONS) == NOTIFICATIONS
    assert records[GROUP]["status"] == "open"
    assert records[GROUP]["timezone"] == "Asia/Shanghai"
    for record in records.values():
        valid("reconciliation.v1.json", {**record, "updated_at": "2026-11-23T08:00:00Z"})


def test_the_order_the_sources_arrive_in_changes_nothing() -> None:
    found = calls(START)
    orders = [
        (provisional(found), receipts(found), settled(found)),
        (receipts(found), provisional(found), settled(found)),
        (provisional(found), settled(found), receipts(found)),
    ]
    results = [reconcile(latest_events(*map(list, order)), AFTER_GRACE, POLLED)
               for order in orders]  # fmt: skip
    assert results[0] == results[1] == results[2]


def test_before_the_grace_and_the_last_poll_nothing_is_called_missing() -> None:
    records = reconcile(the_day(), START + timedelta(hours=2), {})
    group = records[GROUP]
    assert (group["cdr_only"], group["awaiting_dr"]) == (0, 1)
    assert (group["dr_only"], group["awaiting_cdr"]) == (0, 1)
    assert group["cost_check"]["pending"] == 6
    assert group["cost_mismatch"] == {"calls": 0, "amount": "0", "difference": "0"}
    assert group["cdr_settled"] is False
    # The CDR row of the hour is polled for good (02:00-03:00 UTC), the day not yet.
    hour_polled = {0: datetime(2026, 11, 23, 3, 0, tzinfo=UTC)}
    group = reconcile(the_day(), START + timedelta(hours=2), hour_polled)[GROUP]
    assert (group["dr_only"], group["awaiting_cdr"], group["cdr_settled"]) == (1, 0, False)
    assert group["cost_mismatch"]["calls"] == 2
    assert (group["cdr_only"], group["awaiting_dr"]) == (0, 1)  # its grace: 03:00 + 4 h
    group = reconcile(the_day(), datetime(2026, 11, 23, 7, 0, tzinfo=UTC), hour_polled)[GROUP]
    assert (group["cdr_only"], group["awaiting_dr"]) == (1, 0)


def test_a_late_settled_cost_is_compared_once_settled_not_before() -> None:
    found = calls(START)
    unsettled = latest_events(list(provisional(found)), list(receipts(found)))
    group = reconcile(unsettled, AFTER_GRACE, POLLED)[GROUP]
    # The provisional CDR price is 1.2 times the settled one: every cost would differ.
    assert group["cost_check"]["mismatched"] == 6 - 1  # H: the basic price, not provisional
    group = reconcile(the_day(), AFTER_GRACE, POLLED)[GROUP]
    assert group["cost_check"]["mismatched"] == 2
    assert group["cdr_cost"] == "0.271"


def test_a_day_is_open_until_the_cdr_api_and_the_settle_delay_are_past_then_final() -> None:
    end = datetime(2026, 11, 24, tzinfo=ZONE)
    final_at = end + timedelta(days=7, minutes=2)
    before = reconcile(the_day(), final_at - timedelta(seconds=1), {})[GROUP]
    after = reconcile(the_day(), final_at, {})[GROUP]
    assert (before["status"], after["status"]) == ("open", "final")
    assert before["final_at"] == after["final_at"] == "2026-11-30T16:02:00.000000Z"
    # Final: nothing can come any more, so every DR without a CDR row is DR-only.
    assert (before["cdr_settled"], before["dr_only"]) == (False, 0)
    assert subset(after, GROUP_CALLS) == GROUP_CALLS


def test_a_call_changing_takes_its_old_part_out_and_a_repeat_or_older_revision_nothing() -> None:
    found = calls(START)
    first = latest_events(list(provisional(found)))
    later = the_day()
    slots: rec.Slots = {}
    stored: dict[str, rec.Part] = {}
    for events in (first, later, first, later):  # older revisions after newer: no change
        for event in events.values():
            piece = rec.part(event, RULES)
            old = stored.get(piece.call_id)
            if not piece.newer_than(old):
                continue
            if old is not None:
                rec.put(slots, old, -1)
            rec.put(slots, piece)
            stored[piece.call_id] = piece
    notified = rec.part(later["N"], RULES)
    rec.put(slots, notified, -1)  # the other group's call, out of this one
    expected = reconcile(later, AFTER_GRACE, POLLED)[GROUP]
    assert rec.record(GROUP, slots, now=AFTER_GRACE, polled=POLLED, rules=RULES) == expected


def test_the_day_is_the_providers_local_day_of_the_start() -> None:
    late = {**the_day()["A"], "started_at": "2026-11-23T16:30:00.000000Z"}  # 00:30 in Shanghai
    assert rec.part(late, RULES).group.day == date(2026, 11, 24)
    unknown = {**late, "started_at": None, "first_seen_at": "2026-11-23T15:59:00.000000Z"}
    assert rec.part(unknown, RULES).group.day == DAY


@pytest.mark.parametrize(
    ("dr", "cdr", "expected"),
    [(30, 30, "exact"), (30, 31, "within_tolerance"), (30, 29, "within_tolerance"),
     (30, 32, "mismatched"), (None, 30, "missing"), (30, None, "missing")],
)  # fmt: skip
def test_second_within_the_tolerance_and_the_rest_exact(
    dr: int | None, cdr: int | None, expected: str
) -> None:
    assert rec.compare("duration_seconds", dr, cdr, RULES) == expected
    if dr is not None and cdr is not None and dr != cdr:
        assert rec.compare("cycles", dr, cdr, RULES) == "mismatched"
    strict = rec.Rules(ZONE, timedelta(hours=4), timedelta(days=7), seconds_tolerance=0)
    assert rec.compare("duration_seconds", 30, 31, strict) == "mismatched"


def test_the_poller_has_polled_up_to_its_frontier_or_its_oldest_window_due_again() -> None:
    t = datetime(2026, 11, 23, tzinfo=UTC)
    checkpoint = Checkpoint(
        {0: t + timedelta(hours=10), 1: t + timedelta(hours=9)},
        (Repoll(t + timedelta(hours=11), Window(0, t + timedelta(hours=5), t + timedelta(hours=6)),
                3),),
    )  # fmt: skip
    assert rec.polled_through(checkpoint) == {0: t + timedelta(hours=5), 1: t + timedelta(hours=9)}
    assert rec.polled_through(None) == {}


def test_parts_and_hours_round_trip_with_their_decimals() -> None:
    piece = rec.part(the_day()["E"], RULES)
    assert rec.decode_part(piece.call_id, rec.encode_part(piece)) == piece
    assert isinstance(piece.tally["mismatch_amount"], Decimal)
    slots: rec.Slots = {}
    rec.put(slots, piece)
    assert rec.decode_slots(rec.encode_slots(slots)) == slots


def test_totals_add_the_groups_up() -> None:
    records = reconcile(the_day(), AFTER_GRACE, POLLED)
    total = rec.totals(records.values())
    assert (total["calls"], total["matched"], total["cost"], total["cdr_cost"]) == (
        9, 7, "0.377", "0.391",
    )  # fmt: skip
    assert total["fields"]["cycles"] == {"exact": 6, "within_tolerance": 0, "mismatched": 1,
                                         "missing": 0}  # fmt: skip
    assert total["status"] == "open"
    assert rec.totals([])["calls"] == 0


def test_a_call_counts_under_the_kinds_of_its_own_record() -> None:
    events = the_day()

    def kinds(letter: str) -> set[str]:
        piece = rec.part(events[letter], RULES)
        slots: rec.Slots = {}
        rec.put(slots, piece)
        found = rec.record(piece.group, slots, now=AFTER_GRACE, polled=POLLED, rules=RULES)
        return {kind for kind in rec.KINDS if kind != "all" and rec.counted_in(found, kind)}

    assert kinds("A") == {"matched"}
    assert kinds("C") == {"cdr-only"}
    assert kinds("D") == {"dr-only"}
    assert kinds("E") == {"matched", "cost-mismatch"}
    assert kinds("F") == {"matched", "within-tolerance"}
    assert kinds("G") == {"matched", "mismatched", "cost-mismatch"}


def test_time_is_judged_per_five_minutes_of_the_calls_start() -> None:
    events = the_day()  # A..H start at 10:00 to 10:07, N at 10:13 (Shanghai): 02:00 UTC on
    first_slot = {0: datetime(2026, 11, 23, 2, 5, tzinfo=UTC)}  # 02:00-02:05 polled for good
    group = reconcile(events, START + timedelta(hours=1), first_slot)[GROUP]
    assert (group["dr_only"], group["awaiting_cdr"]) == (1, 0)  # D started 10:03
    # A, B, E (10:00-10:04) compared; F, G, H (10:05-10:07) still pending.
    assert group["cost_check"] == {"exact": 2, "within_tolerance": 0, "mismatched": 1,
                                   "missing": 0, "pending": 3}  # fmt: skip
    # C (10:02) is CDR-only once 4 hours have passed since 02:05 UTC, not a minute before.
    at = datetime(2026, 11, 23, 6, 5, tzinfo=UTC)
    assert reconcile(events, at - timedelta(minutes=1), first_slot)[GROUP]["cdr_only"] == 0
    assert reconcile(events, at, first_slot)[GROUP]["cdr_only"] == 1


def test_a_final_groups_slots_merged_make_the_same_record() -> None:
    slots: rec.Slots = {}
    for letter, event in the_day().items():
        if letter != "N":
            rec.put(slots, rec.part(event, RULES))
    final = datetime(2026, 12, 1, tzinfo=UTC)
    settled_slots = rec.settle(slots)
    assert len(slots) == 3
    assert len(settled_slots) == 2
    assert rec.record(GROUP, settled_slots, now=final, polled={}, rules=RULES) == rec.record(
        GROUP, slots, now=final, polled={}, rules=RULES
    )
    # A call taken out of a merged slot later still leaves the right sums.
    rec.put(settled_slots, rec.part(the_day()["G"], RULES), -1)
    rec.put(slots, rec.part(the_day()["G"], RULES), -1)
    assert rec.record(GROUP, settled_slots, now=final, polled={}, rules=RULES) == rec.record(
        GROUP, slots, now=final, polled={}, rules=RULES
    )
