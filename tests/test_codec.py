from datetime import timedelta

from connector.codec import decode_observation, decode_state, encode_observation, encode_state
from connector.merge import merge
from tests.test_merge import CDR, DR, T0


def test_observations_round_trip_with_decimals_and_times() -> None:
    for observation in (DR, CDR):
        assert decode_observation(encode_observation(observation, T0)) == (observation, T0)


def test_call_states_round_trip() -> None:
    state, _ = merge(None, CDR, T0)
    state, _ = merge(state, DR, T0 + timedelta(minutes=1))
    assert decode_state(encode_state(state)) == state
