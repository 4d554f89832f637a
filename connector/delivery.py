"""What a failed delivery to Kafka means (its report: `connector.deadletters`).

Pure: "Kafka is down" (wait and send again) is told apart from "Kafka refuses this record"
(sending it again can never work: set it aside, dead-letter it, go on).
"""

from __future__ import annotations

import enum
from typing import Final

from aiokafka import errors

REFUSED_ERRORS: Final[tuple[type[BaseException], ...]] = (
    errors.MessageSizeTooLargeError,
    errors.RecordTooLargeError,
    errors.RecordListTooLargeError,
    errors.CorruptRecordException,
    errors.InvalidTopicError,
    errors.InvalidTimestampError,
    errors.InvalidRequestError,
    errors.PolicyViolationError,
    errors.UnsupportedForMessageFormatError,
)
BREAK_PRODUCER: Final[tuple[type[BaseException], ...]] = (
    errors.OutOfOrderSequenceNumber,
    errors.ProducerFenced,
    errors.InvalidProducerEpoch,
    errors.UnknownProducerId,
)
# Kafka will take nothing from this user until someone grants an ACL: not an outage.
DENIED_ERRORS: Final[tuple[type[BaseException], ...]] = (
    errors.TopicAuthorizationFailedError,
    errors.GroupAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError,
    errors.TransactionalIdAuthorizationFailed,
)


class Outcome(enum.Enum):
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"


def classify(exc: BaseException) -> Outcome:
    """REFUSED when Kafka will never take this record; UNAVAILABLE for everything else."""
    if isinstance(exc, REFUSED_ERRORS):
        return Outcome.REFUSED
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, errors.KafkaError):
        return Outcome.REFUSED
    return Outcome.UNAVAILABLE


def denied(exc: BaseException) -> bool:
    """True when an ACL, not the record nor an outage, keeps Kafka from taking it."""
    return isinstance(exc, DENIED_ERRORS)


def breaks_producer(exc: BaseException) -> bool:
    """After this, the idempotent producer's sequence is broken: use a new producer.

    A refused batch leaves a gap in its partition's sequence numbers, so it counts too."""
    return isinstance(exc, BREAK_PRODUCER) or classify(exc) is Outcome.REFUSED


def reason(exc: BaseException) -> str:
    """A short reason naming the error; no record content in it."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
