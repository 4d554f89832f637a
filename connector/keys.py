"""How every record of one call is keyed, on every topic the worker reads.

The DR's phone carries the country code and the CDR's does not, so the key is the
messageid and the phone's last digits, which both forms share. One call's DR and CDR
rows then land on the same partition of their co-partitioned topics and meet in one
worker, and a group call's many phones still spread over all partitions.
"""

from __future__ import annotations

from typing import Final

from aiokafka.partitioner import murmur2

PHONE_DIGITS: Final = 4


def call_key(message_id: object, phone: object) -> bytes:
    message = "" if message_id is None else str(message_id).strip()
    digits = "".join(ch for ch in str(phone or "") if ch.isdigit())
    return f"{message}|{digits[-PHONE_DIGITS:]}".encode()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and aiokafka's) gives `key`."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
