"""The push listener's gate as a plain value: the cap, the handshakes in flight, and when a
flood of connections has ebbed (its memory then goes back to the kernel,
connector/receiver/heap.py; measured on the real process in test_receiver_flood.py)."""

from connector.receiver import heap
from connector.receiver.gate import EBB_FROM, Gate, locked_reason


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


def test_a_port_is_locked_once_it_has_refused_everyone_long_enough_with_little_in_flight() -> None:
    gate = Gate(limit=20)
    for _ in range(20):
        assert gate.admit(now=0.0)
    assert not gate.admit(now=10.0)
    assert not gate.admit(now=50.0)
    assert gate.locked_for(69.0) == 59.0
    assert locked_reason(gate, 69.0, in_flight=0, patience=60) is None
    reason = locked_reason(gate, 70.0, in_flight=1, patience=60)
    assert reason == (
        "the push port has refused every new connection for 60 s"
        " (20 of 20 open, 1 requests in flight)"
    )
    assert locked_reason(gate, 70.0, in_flight=2, patience=60) is None  # busy: a tenth
    gate.leave()
    assert gate.locked_for(70.0) == 0.0  # the next one would be admitted
    assert gate.admit(now=71.0)
    assert gate.refusing_since is None


def test_a_full_handshake_cap_locks_a_tls_port_too() -> None:
    gate = Gate(limit=10, handshakes=2)
    assert gate.admit(tls=True, now=0.0)
    assert gate.admit(tls=True, now=0.0)
    assert not gate.admit(tls=True, now=1.0)
    assert gate.locked_for(100.0, tls=True) == 99.0
    gate.shaken()
    assert gate.locked_for(100.0, tls=True) == 0.0
