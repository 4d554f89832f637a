"""The publisher's states as plain values: where a push goes (`Mode`), the batch the drain
holds (`InHand`), the producer in use (`Line`) and why the receiver is not ready
(`Blockers`). docs/receiver.md draws how they change."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.frames import Entry
from connector.receiver.spool import Batch

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


class StoredIn(enum.Enum):
    KAFKA = "kafka"
    SPOOL = "spool"


class Mode(enum.Enum):
    """Where a push goes: DIRECT to Kafka while the spool is empty; SPOOLING from the first
    push Kafka did not take until the drain has emptied the spool."""

    DIRECT = "direct"
    SPOOLING = "spooling"


class Sending(enum.Enum):
    """How the drain sends the batch in hand: TOGETHER, or ONE_BY_ONE after Kafka refused a
    record in it (the refusal hits the whole producer batch; a batch-mate may be fine alone)."""

    TOGETHER = "together"
    ONE_BY_ONE = "one_by_one"


@dataclass
class InHand:
    """The batch the drain read and has not acknowledged yet, and what of it is still to
    deliver: a failure part way neither skips a record nor sends again one that went through."""

    batch: Batch
    undelivered: list[Entry]
    sending: Sending = Sending.TOGETHER

    def next_send(self) -> list[Entry]:
        return self.undelivered[:1] if self.sending is Sending.ONE_BY_ONE else self.undelivered


@dataclass
class Line:
    """The producer in use, with the credentials it was built with. It is `spent` once it
    must be replaced: its sender stopped, its sequence broke, or the mounted credentials
    changed while it failed. Being the producer's own, a failure seen late on a producer
    already replaced does not condemn its successor."""

    producer: AIOKafkaProducer
    built_with: object
    spent: bool = False

    def rotated(self, credentials: object) -> bool:
        """Spend the line when `credentials` differ from those it was built with; True then."""
        if credentials == self.built_with:
            return False
        self.spent = True
        return True


@dataclass(frozen=True)
class Readiness:
    ok: bool
    reason: str


@dataclass
class Blockers:
    """Why the receiver is not ready though its drain runs. Kafka refuses it (a login, an
    ACL: what the broker said, asked after a failure) until a producer starts, the receiver
    goes direct or a batch drains; a drain failure that is not Kafka's wedges it until a
    batch drains."""

    refusal: str | None = None
    wedged: str | None = None

    def refused(self, refusal: str | None) -> bool:
        """Take what the broker said of the last failure (None: no refusal); True when new."""
        new = refusal is not None and refusal != self.refusal
        self.refusal = refusal
        return new

    def wedge(self, reason: str) -> bool:
        """The drain failed on something that is not Kafka; True the first time."""
        first = self.wedged is None
        self.wedged = reason
        return first

    def accepted(self) -> None:
        """A producer started, or pushes go straight to Kafka: the refusal is over."""
        self.refusal = None

    def drained(self) -> None:
        """A batch went from the spool to Kafka: nothing blocks the receiver."""
        self.refusal = self.wedged = None

    def readiness(self) -> Readiness | None:
        if self.refusal is not None:
            return Readiness(False, self.refusal)
        if self.wedged is not None:
            return Readiness(False, f"the spool cannot drain: {self.wedged}")
        return None
