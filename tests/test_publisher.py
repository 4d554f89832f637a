"""The publisher's named states as plain values (connector/receiver/states.py); its
behaviour under faults is tested against a real broker: test_spool_faults.py,
test_receiver_outage.py, test_fault_matrix.py."""

from connector.frames import Entry
from connector.receiver.spool import Batch
from connector.receiver.states import Blockers, InHand, Line, Readiness, Sending


def entries(count: int) -> list[Entry]:
    return [Entry("t", None, b"%d" % number) for number in range(count)]


def test_a_batch_in_hand_is_sent_together_until_a_refusal_then_one_by_one() -> None:
    sent = entries(3)
    in_hand = InHand(Batch(entries=sent), list(sent))
    assert in_hand.sending is Sending.TOGETHER
    assert in_hand.next_send() == sent
    in_hand.sending = Sending.ONE_BY_ONE
    assert in_hand.next_send() == sent[:1]
    in_hand.undelivered = []
    assert in_hand.next_send() == []


def test_a_line_is_spent_when_the_credentials_it_was_built_with_changed() -> None:
    line = Line(producer=object(), built_with=("password", 1))
    assert not line.rotated(("password", 1))
    assert not line.spent
    assert line.rotated(("password", 2))
    assert line.spent
    successor = Line(producer=object(), built_with=("password", 2))
    line.spent = True  # a failure seen late on the replaced producer
    assert not successor.spent


def test_blockers_name_a_refusal_before_a_wedge_and_clear_as_kafka_takes_records() -> None:
    blockers = Blockers()
    assert blockers.readiness() is None
    assert blockers.wedge("disk full")
    assert not blockers.wedge("disk still full")
    assert blockers.readiness() == Readiness(False, "the spool cannot drain: disk still full")
    assert blockers.refused("TopicAuthorizationFailed: grant Write on nxcloud.voice.dr.raw")
    assert not blockers.refused("TopicAuthorizationFailed: grant Write on nxcloud.voice.dr.raw")
    assert blockers.readiness() == Readiness(
        False, "TopicAuthorizationFailed: grant Write on nxcloud.voice.dr.raw"
    )
    blockers.accepted()
    assert blockers.readiness() == Readiness(False, "the spool cannot drain: disk still full")
    assert blockers.refused("SaslAuthenticationFailed")
    assert not blockers.refused(None)
    assert blockers.refusal is None
    blockers.drained()
    assert blockers.readiness() is None
