"""The push listener's gate as a plain value: the cap, the handshakes in flight, and when a
flood of connections has ebbed (its memory then goes back to the kernel,
connector/receiver/heap.py; measured on the real process in test_receiver_flood.py)."""

from connector.receiver import heap
from connector.receiver.protocol import EBB_FROM, Gate


def test_the_gate_admits_up_to_its_limit_and_handshakes_up_to_theirs() -> None:
    gate = Gate(limit=3, handshakes=1)
    assert gate.admit(tls=True)
    assert not gate.admit(tls=True)
    assert gate.admit()
    assert gate.admit()
    assert not gate.admit()
    assert gate.open == 3


def test_a_flood_ebbs_once_a_quarter_of_its_peak_is_left_and_a_trickle_never_does() -> None:
    gate = Gate(limit=10 * EBB_FROM)
    for _ in range(EBB_FROM - 1):
        assert gate.admit()
    assert not any(gate.leave() for _ in range(EBB_FROM - 1))
    for _ in range(4 * EBB_FROM):
        assert gate.admit()
    ebbs = [gate.open for _ in range(4 * EBB_FROM) if gate.leave()]
    assert ebbs == [EBB_FROM, EBB_FROM // 4]  # a quarter of the peak, then of that
    assert gate.open == 0


def test_memory_goes_back_to_the_kernel_where_glibc_allows_it() -> None:
    assert heap.give_back()  # this machine runs glibc, as the image does (Debian)
