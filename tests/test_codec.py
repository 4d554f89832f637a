from datetime import timedelta

import orjson

from connector.codec import decode_observation, decode_state, encode_observation, encode_state
from connector.merge import merge
from tests.support import CDR, DR, T0


def test_observations_round_trip_with_decimals_and_times() -> None:
    for observation in (DR, CDR):
        assert decode_observation(encode_observation(observation, T0)) == (observation, T0)


def test_call_states_round_trip() -> None:
    state, _ = merge(None, CDR, T0)
    state, _ = merge(state, DR, T0 + timedelta(minutes=1))
    assert decode_state(encode_state(state)) == state


def test_a_state_from_before_given_by_dr_takes_what_a_seen_dr_had_as_final() -> None:
    state, _ = merge(None, CDR, T0)
    state, _ = merge(state, DR, T0 + timedelta(minutes=1))
    written = orjson.loads(encode_state(state))
    given = written.pop("given_by_dr")
    assert "duration_seconds" in given
    assert "cdr_id" not in given
    assert "display_number" not in given  # the DR had no show_phone, the CDR row had
    # The merge then kept the first value of every fact once a DR was seen.
    kept_then = {*given, "display_number"}
    assert decode_state(orjson.dumps(written)).given_by_dr == kept_then  # before billed_by_dr
    billing = {"basic_price", "cycle_seconds", "cycles", "unit_price"}
    written["billed_by_dr"] = ["basic_price", "cycles"]  # a DR that left two prices blank
    state = decode_state(orjson.dumps(written))
    assert state.given_by_dr == (kept_then - billing) | {"basic_price", "cycles"}


def test_a_state_from_before_reported_takes_the_drs_own_figures_from_what_it_gave() -> None:
    state, _ = merge(None, CDR, T0)
    state, _ = merge(state, DR, T0 + timedelta(minutes=1))
    assert set(state.reported) == {"cdr", "dr"}
    written = orjson.loads(encode_state(state))
    del written["reported"]
    before = decode_state(orjson.dumps(written))
    assert before.reported == {"dr": state.reported["dr"]}  # the CDR row's: at its next row
    assert decode_state(orjson.dumps({**written, "sources": ["cdr"]})).reported == {}
