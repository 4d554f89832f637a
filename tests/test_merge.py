from dataclasses import replace
from datetime import timedelta
from itertools import permutations

from connector.merge import CallState, cost, expired, merge, merge_batch
from connector.normalize import Observation, from_cdr, from_dr
from tests.support import (
    CDR,
    CDR_GROUP_ROW,
    CDR_VERIFICATION_ROW,
    DR,
    EXAMPLE_FIELDS,
    T0,
    VERIFICATION,
    ZONE,
)


def settled(observation: Observation, price: float) -> Observation:
    return from_cdr({**CDR_GROUP_ROW, "customer_price": price}, 0, ZONE)


def test_the_first_record_of_a_call_is_revision_1() -> None:
    state, event = merge(None, CDR, T0)
    assert event is not None
    assert event["revision"] == 1
    assert event["sources"] == ["cdr"]
    assert event["billing"]["cost_final"] is False
    assert event["billing"]["cost"] == "0.05"
    assert event["first_seen_at"] == event["updated_at"] == "2026-11-23T10:00:00.000000Z"
    assert state.revision == 1


def test_the_other_source_arriving_is_the_next_revision_with_the_full_state() -> None:
    state, _ = merge(None, CDR, T0)
    state, event = merge(state, DR, T0 + timedelta(seconds=5))
    assert event is not None
    assert event["revision"] == 2
    assert event["sources"] == ["cdr", "dr"]
    assert event["display_number"] == "085944247"
    assert event["hangup_cause"] == "NORMAL_CLEARING"
    assert event["cdr_id"] == "11112"
    assert event["billing"]["unit_price"] == "0.036"
    assert event["billing"]["cost_final"] is True
    assert event["first_seen_at"] == "2026-11-23T10:00:00.000000Z"


def test_a_repeat_changes_nothing_and_emits_nothing() -> None:
    state, _ = merge(None, DR, T0)
    again, event = merge(state, DR, T0 + timedelta(minutes=1))
    assert event is None
    assert again == state
    state, _ = merge(state, CDR, T0)
    repolled, event = merge(state, CDR, T0 + timedelta(hours=1))
    assert event is None
    assert repolled.revision == 2


def test_a_settled_cdr_cost_is_the_billing_until_the_dr_is_seen_and_then_only_its_report() -> None:
    state, _ = merge(None, CDR, T0)
    state, event = merge(state, settled(CDR, 0.04), T0)
    assert event is not None
    assert event["billing"]["unit_price"] == "0.04"
    assert event["reports"] == {
        "dr": None,
        "cdr": {
            "duration_seconds": 19,
            "cycle_seconds": 20,
            "cycles": 1,
            "connected": True,
            "cost": "0.04",
        },
    }
    state, dr_event = merge(state, DR, T0)
    assert dr_event is not None
    state, event = merge(state, settled(CDR, 0.07), T0)
    assert event is not None
    assert event["billing"] == dr_event["billing"]
    assert state.facts["unit_price"] == DR.facts["unit_price"]
    assert event["reports"]["dr"] == dr_event["reports"]["dr"]
    assert event["reports"]["cdr"]["cost"] == "0.07"
    assert merge(state, settled(CDR, 0.07), T0 + timedelta(hours=1))[1] is None  # a re-poll


def test_each_source_reports_its_own_figures_whatever_the_merge_takes() -> None:
    disagreeing = from_cdr({**CDR_GROUP_ROW, "second": 25, "size": 2, "cycle": 20}, 0, ZONE)
    for first, second in permutations((DR, disagreeing)):
        state, _ = merge(None, first, T0)
        _, event = merge(state, second, T0 + timedelta(minutes=1))
        assert event is not None
        assert event["duration_seconds"] == DR.facts["duration_seconds"]
        assert event["reports"]["dr"]["duration_seconds"] == DR.facts["duration_seconds"]
        assert event["reports"]["cdr"] == {
            "duration_seconds": 25,
            "cycle_seconds": 20,
            "cycles": 2,
            "connected": True,
            "cost": "0.1",
        }


def test_a_price_the_dr_left_blank_follows_the_newest_cdr_row_and_is_not_final() -> None:
    unconnected = {"result": "Unsuccessful connection", "size": "0", "basic_price": ""}
    dr = from_dr({**EXAMPLE_FIELDS, "messageid": "784522", **unconnected}, ZONE)
    row = {**CDR_GROUP_ROW, "result": "Unsuccessful connection", "size": 0}
    state, _ = merge(None, from_cdr(row, 0, ZONE), T0)
    state, event = merge(state, dr, T0 + timedelta(minutes=1))
    assert event is not None
    assert (event["billing"]["cost"], event["billing"]["cost_final"]) == ("0.005", False)
    later = from_cdr({**row, "basic_price": 0.007, "customer_price": 0.09}, 0, ZONE)
    state, event = merge(state, later, T0 + timedelta(hours=1))
    assert event is not None
    assert event["billing"]["basic_price"] == "0.007"
    assert event["billing"]["unit_price"] == "0.036"  # the DR's
    assert (event["billing"]["cost"], event["billing"]["cost_final"]) == ("0.007", False)


def test_the_cdr_says_which_of_verification_or_notification() -> None:
    dr = from_dr({**VERIFICATION, "messageid": "35618"}, ZONE)
    state, first = merge(None, dr, T0)
    assert first is not None
    assert first["service"] == "verification_or_notification"
    state, second = merge(state, from_cdr(CDR_VERIFICATION_ROW, 1, ZONE), T0)
    assert second is not None
    assert second["service"] == "notification"
    assert second["call_id"] == first["call_id"]


def test_event_ids_are_deterministic_and_differ_by_revision() -> None:
    one = merge(None, CDR, T0)[1]
    same = merge(None, CDR, T0 + timedelta(days=1))[1]
    assert one is not None
    assert same is not None
    assert one["event_id"] == same["event_id"]
    state, _ = merge(None, CDR, T0)
    two = merge(state, DR, T0)[1]
    assert two is not None
    assert two["event_id"] != one["event_id"]


def test_cost_rules() -> None:
    from decimal import Decimal

    assert cost({"connected": True, "cycles": 3, "unit_price": Decimal("0.012")}) == Decimal(
        "0.036"
    )
    assert cost({"connected": False, "cycles": 0, "basic_price": Decimal("0.005")}) == Decimal(
        "0.005"
    )
    assert cost({"connected": False, "cycles": 0, "unit_price": Decimal("0.012")}) == 0
    assert cost({"connected": True}) is None


def test_state_expires_after_the_horizon() -> None:
    state, _ = merge(None, CDR, T0)
    assert not expired(state, T0 + timedelta(days=7), timedelta(days=8))
    assert expired(state, T0 + timedelta(days=9), timedelta(days=8))
    assert not expired(replace(state, updated_at=None), T0, timedelta(0))
    assert isinstance(state, CallState)


def test_a_stale_cdr_row_replayed_after_a_newer_one_changes_nothing() -> None:
    state, _ = merge(None, CDR, T0)
    state, event = merge(state, settled(CDR, 0.04), T0 + timedelta(minutes=30))
    assert event is not None
    replayed, stale = merge(state, CDR, T0)
    assert stale is None
    assert replayed.facts["unit_price"] == state.facts["unit_price"]


def test_a_batch_merges_each_call_on_its_own_earlier_changes_and_keeps_the_last_input() -> None:
    other = from_dr({**EXAMPLE_FIELDS, "messageid": "999", "customer_price": "0.036"}, ZONE)
    earlier, _ = merge(None, CDR, T0 - timedelta(hours=1))
    table = {CDR.call_id: earlier}
    batch = merge_batch(
        [
            ("a", CDR, T0),  # a repeat of the stored state: nothing
            ("b", DR, T0),  # revision 2 on the stored state
            ("c", other, T0),  # a new call
            ("d", DR, T0 + timedelta(seconds=1)),  # a repeat of b, within the batch
            # the DR's cost stands; only the CDR row's own report changes
            ("e", settled(CDR, 0.04), T0 + timedelta(seconds=2)),
        ],
        table.get,
    )
    assert [(e["call_id"], e["revision"]) for e in batch.events] == [
        (DR.call_id, 2),
        (other.call_id, 1),
        (DR.call_id, 3),
    ]
    assert batch.events[2]["billing"] == batch.events[0]["billing"]
    assert batch.events[2]["reports"]["cdr"]["cost"] == "0.04"
    assert batch.changed[DR.call_id][0] == "e"
    assert batch.changed[DR.call_id][1].revision == 3
    assert batch.changed[other.call_id][0] == "c"
    assert table == {CDR.call_id: earlier}


def facts_of(events: list[dict[str, object]]) -> list[dict[str, object]]:
    drop = ("event_id", "revision", "first_seen_at", "updated_at")
    return [{k: v for k, v in e.items() if k not in drop} for e in events]


def assert_no_flip_back(events: list[dict[str, object]]) -> None:
    """No field returns to a value it had before it changed."""
    for name in events[0]:
        values = [repr(e[name]) for e in events]
        changes = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
        assert len(changes) == len(set(changes)), (name, values)


def test_every_field_ends_the_same_in_every_arrival_order_and_never_flips_back() -> None:
    """A DR and two CDR rows that disagree on every field both carry: the DR's value wins,
    a field the DR left blank follows the newest CDR row, whatever the order."""
    dr = from_dr(
        {**EXAMPLE_FIELDS, "messageid": "784522", "duration": "25", "second": "19",
         "show_phone": "085944247", "countryCode": "+86", "start_time": "", "size": "1"},
        ZONE,
    )  # fmt: skip
    row = {**CDR_GROUP_ROW, "second": 20, "show_phone": "85944247", "countryCode": 86,
           "result": "成功接通", "ivr_result": 2, "end_time": "2019-09-09 09:00:21"}  # fmt: skip
    first = (from_cdr(row, 0, ZONE), T0 + timedelta(minutes=5))
    later = (from_cdr({**row, "second": 21, "start_time": "2019-09-09 09:00:02"}, 0, ZONE),
             T0 + timedelta(minutes=30))  # fmt: skip
    seen = [(dr, T0), first, later]
    finals = []
    for order in permutations(seen):
        state: CallState | None = None
        events = []
        for observation, at in order:
            state, event = merge(state, observation, at)
            if event is not None:
                events.append(event)
        assert_no_flip_back(facts_of(events))
        finals.append(facts_of(events)[-1])
    assert all(final == finals[0] for final in finals), finals
    final = finals[0]
    assert final["duration_seconds"] == 19  # the DR's second, not its duration
    assert final["display_number"] == "085944247"  # the DR's
    assert final["started_at"] == "2019-09-09T01:00:02.000000Z"  # the DR's is blank: newest row
    assert (final["country_code"], final["phone_raw"]) == ("86", "8615088888888")


def test_a_cdr_only_call_follows_its_newest_row_in_every_field() -> None:
    row = {**CDR_GROUP_ROW, "second": 20}
    state, _ = merge(None, from_cdr(row, 0, ZONE), T0)
    state, event = merge(state, from_cdr({**row, "second": 21}, 0, ZONE), T0 + timedelta(hours=1))
    assert event is not None
    assert event["duration_seconds"] == 21
    stale, event = merge(state, from_cdr(row, 0, ZONE), T0 + timedelta(minutes=1))
    assert (stale, event) == (state, None)


def test_an_amount_has_one_spelling_whichever_source_gave_it() -> None:
    """The CDR's 0.05 and the DR's "0.050" are one price: the DR arriving must not show it
    as changed, nor the cost made of it."""
    state, first = merge(None, CDR, T0)
    dr = from_dr({**EXAMPLE_FIELDS, "messageid": "784522", "customer_price": "0.050",
                  "basic_price": "0.0050", "cycle": "20", "size": "1"}, ZONE)  # fmt: skip
    _, second = merge(state, dr, T0 + timedelta(seconds=5))
    assert first is not None
    assert second is not None
    assert second["billing"] | {"cost_final": False} == first["billing"]
    assert first["billing"]["unit_price"] == "0.05"
    for said, spelled in [("1.000", "1"), ("0.000", "0"), ("10", "10"), ("1E+2", "100"),
                          ("0.10", "0.1"), ("12.3400", "12.34")]:  # fmt: skip
        call = from_dr({**EXAMPLE_FIELDS, "customer_price": said}, ZONE)
        _, event = merge(None, call, T0)
        assert event is not None
        assert event["billing"]["unit_price"] == spelled
