"""A call's identity: its id, and how every record of it is keyed and partitioned.

A call is (service family, messageid, phone in E.164); `call_id` is its digest, the key of
the worker's table and of the call-event topic. The DR's phone carries the country code and
the CDR's does not, so the raw records' key is the messageid and the phone's last digits,
which both forms share. One call's DR and CDR rows then land on the same partition of their
co-partitioned topics and meet in one worker, and a group call's many phones still spread
over all partitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from aiokafka.partitioner import murmur2

PHONE_DIGITS: Final = 4


def call_id(family: str, message_id: str, phone: str) -> str:
    """The call's id: `family` is the service family, `phone` in E.164."""
    identity = f"{family}|{message_id}|{phone}".encode()
    return hashlib.blake2b(identity, digest_size=16).hexdigest()


def spelled(value: object) -> str:
    """A provider's value as text, the same whichever JSON type it came as: a whole number
    sent as a float (15088888888.0, 1.5088888888e10) is its digits, not "15088888888.0"
    (one digit more) or "1.5088888888e10"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def call_key(message_id: object, phone: object) -> bytes:
    """The key of every record of the call on the topics the worker reads."""
    message = spelled(message_id).strip()
    digits = "".join(ch for ch in spelled(phone) if ch.isdigit())
    return f"{message}|{digits[-PHONE_DIGITS:]}".encode()


def dr_key(fields: Mapping[str, str]) -> bytes:
    """A receipt's key: its call's CDR rows share its partition."""
    return call_key(fields["messageid"], fields["phone"])


def cdr_key(row: Mapping[str, Any]) -> bytes:
    """A CDR row's key: its call's receipts share its partition."""
    return call_key(row.get("messageid"), row.get("phone"))


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and aiokafka's) gives `key`."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
