"""The Confluent wire format of a record value, opt-in (`NXCLOUD_REGISTRY_WIRE_FORMAT`). Pure.

A framed value is the magic byte 0, the schema's registry id as 4 bytes big-endian, then
the JSON. A plain value is the JSON alone; JSON never starts with a zero byte, so a reader
tells the two forms apart by the first byte and reads both.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = b"\x00"
HEADER: Final = 5


def frame(schema_id: int, payload: bytes) -> bytes:
    return MAGIC + schema_id.to_bytes(4, "big") + payload


def unframe(value: bytes) -> tuple[int | None, bytes]:
    """The schema id (None for a plain value) and the JSON; ValueError for a value that
    starts like a framed one but is too short to be one."""
    if not value.startswith(MAGIC):
        return None, value
    if len(value) < HEADER:
        raise ValueError(f"a framed value has at least {HEADER} bytes, this one {len(value)}")
    return int.from_bytes(value[1:HEADER], "big"), value[HEADER:]


def payload(value: bytes) -> bytes:
    """The JSON of a value in either form."""
    return unframe(value)[1]
