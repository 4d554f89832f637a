"""The publisher's named states as plain values (its behaviour under faults is tested against
a real broker: test_spool_faults.py, test_receiver_outage.py, test_fault_matrix.py)."""

from connector.frames import Entry
from connector.receiver.publisher import InHand, Sending
from connector.receiver.spool import Batch


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
