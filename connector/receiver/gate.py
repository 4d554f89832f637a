"""The connections open on one listener, as a plain value: at most `limit` of them, of them at
most `handshakes` in a TLS handshake; when a flood of them has ebbed (time to give memory
back); and how long the listener has refused every new connection (a port locked shut)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HANDSHAKES: Final = 256
EBB_FROM: Final = 256


@dataclass
class Gate:
    """Each connection is admitted once and leaves once; a TLS one is also `shaken` once, when
    its handshake ends (done, failed or cut). A handshake holds the TLS layer's buffers, up
    to 256 KiB, hence its own smaller cap."""

    limit: int
    handshakes: int = HANDSHAKES
    open: int = 0
    shaking: int = 0
    peak: int = 0
    refusing_since: float | None = None  # the first refusal since the last admission

    def admit(self, tls: bool = False, now: float = 0.0) -> bool:
        if self.full(tls):
            if self.refusing_since is None:
                self.refusing_since = now
            return False
        self.refusing_since = None
        self.open += 1
        self.shaking += tls
        self.peak = max(self.peak, self.open)
        return True

    def full(self, tls: bool = False) -> bool:
        return self.open >= self.limit or (tls and self.shaking >= self.handshakes)

    def shaken(self) -> None:
        self.shaking -= 1

    def leave(self) -> bool:
        """One connection fewer; True when a flood has ebbed: from at least EBB_FROM open,
        down to a quarter of the most since the last ebb (time to give memory back)."""
        self.open -= 1
        if self.peak < EBB_FROM or self.open > self.peak // 4:
            return False
        self.peak = self.open
        return True

    def locked_for(self, now: float, tls: bool = False) -> float:
        """How long every new connection has been refused, while the next would be too: 0
        when the last one was admitted or there is room now."""
        if self.refusing_since is None or not self.full(tls):
            return 0.0
        return now - self.refusing_since


def locked_reason(
    gate: Gate, now: float, in_flight: int, patience: float, tls: bool = False
) -> str | None:
    """Why the push port counts as locked shut: every new connection refused for `patience`
    seconds or more, while fewer requests than a tenth of the cap are in flight (so the cap is
    not held by work being done); None when it is not."""
    locked = gate.locked_for(now, tls)
    if locked < patience or in_flight * 10 >= gate.limit:
        return None
    shaking = f", {gate.shaking} in a TLS handshake" if tls else ""
    return (
        f"the push port has refused every new connection for {locked:.0f} s"
        f" ({gate.open} of {gate.limit} open{shaking}, {in_flight} requests in flight)"
    )
