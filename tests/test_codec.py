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


def test_a_state_from_before_billed_by_dr_takes_the_billing_of_a_seen_dr_as_final() -> None:
    state, _ = merge(None, CDR, T0)
    state, _ = merge(state, DR, T0 + timedelta(minutes=1))
    written = orjson.loads(encode_state(state))
    del written["billed_by_dr"]
    assert decode_state(orjson.dumps(written)) == state
    assert state.billed_by_dr == {"cycle_seconds", "cycles", "unit_price", "basic_price"}
