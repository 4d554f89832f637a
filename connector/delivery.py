"""What a failed delivery to Kafka means, and how a record Kafka refuses is reported.

Pure: "Kafka is down" (wait and send again) is told apart from "Kafka refuses this record"
(sending it again can never work: set it aside, dead-letter it, go on).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Final

import orjson
from aiokafka import errors

from connector.frames import Damage, Entry

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
HEAD_CHARS: Final = 4096


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


def refused_record(why: str, entry: Entry, *, kept: Path, receiver: str) -> bytes:
    """The dead-letter report of a record Kafka refused: bounded, the whole record is on disk."""
    return orjson.dumps(
        {
            "source": "spool",
            "reason": why,
            "receiver": receiver,
            "topic": entry.topic,
            "key": None if entry.key is None else entry.key[:HEAD_CHARS].decode(errors="replace"),
            "value_bytes": len(entry.value),
            "value_head": entry.value[:HEAD_CHARS].decode("utf-8", errors="replace"),
            "kept": str(kept),
        }
    )


def damage_record(damage: Damage, receiver: str) -> bytes:
    """The dead-letter report of spool bytes that hold no valid frame."""
    return orjson.dumps(
        {
            "source": "spool",
            "reason": f"corrupt spool frame: {damage.size} bytes at offset {damage.start} "
            f"of segment {damage.segment}",
            "receiver": receiver,
            "segment": damage.segment,
            "offset": damage.start,
            "bytes": damage.size,
            "kept": None if damage.kept is None else str(damage.kept),
        }
    )
