"""Every record of a call must land on one partition: expiry and the merge depend on it; and
a call's id and key never change (the data already stored holds them)."""

import pytest

from connector.identity import call_id, call_key, cdr_key, dr_key, partition_of
from tests.support import EXAMPLE_FIELDS

# Kafka's own UtilsTest.testMurmur2 vectors: (key, signed 32-bit hash)
JAVA_MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def test_the_dr_and_the_cdr_forms_of_one_phone_share_a_key() -> None:
    dr = call_key("74078a0090f17e011505297261994", "8615088888888")
    cdr = call_key(" 74078a0090f17e011505297261994 ", 15088888888)
    assert dr == cdr == b"74078a0090f17e011505297261994|8888"


def test_a_numeric_messageid_keys_like_its_text() -> None:
    assert call_key(784522, "15088888888") == call_key("784522", "+86 150-8888-8888")


def test_other_phones_of_one_messageid_get_other_keys() -> None:
    assert call_key("m1", "8615088881234") != call_key("m1", "8615088884321")


@pytest.mark.parametrize(
    ("message_id", "phone", "key"),
    [
        (None, "8615088888888", b"|8888"),
        ("m1", None, b"m1|"),
        ("m1", "", b"m1|"),
        ("m1", "12", b"m1|12"),
    ],
)
def test_missing_parts_still_give_a_key(message_id: object, phone: object, key: bytes) -> None:
    assert call_key(message_id, phone) == key


@pytest.mark.parametrize(("key", "hashed"), JAVA_MURMUR2)
def test_the_partition_is_the_one_javas_default_partitioner_gives(key: bytes, hashed: int) -> None:
    for partitions in (1, 3, 6, 12, 50):
        assert partition_of(key, partitions) == (hashed & 0x7FFFFFFF) % partitions


def test_a_known_key_lands_on_its_known_partition() -> None:
    assert partition_of(b"foobar", 50) == 16
    assert partition_of(b"foobar", 1) == 0


def test_both_forms_of_a_call_land_on_one_partition() -> None:
    dr = call_key("74078a0090f17e011505297261994", "8615088888888")
    cdr = call_key("74078a0090f17e011505297261994", "15088888888")
    assert {partition_of(dr, 6), partition_of(cdr, 6)} == {partition_of(dr, 6)}


def test_the_ids_and_keys_of_stored_data_stay_the_same() -> None:
    assert call_id("group_call", "74078a0090f17e011505297261994", "+8615088888888") == (
        "fcde04cd953b63e43d4c82406e358ef9"
    )
    assert call_id("verification_or_notification", "784522", "+8615088888888") == (
        "d01edd8529acf83b7c35f3dd04a441ef"
    )
    assert dr_key(EXAMPLE_FIELDS) == b"74078a0090f17e011505297261994|8888"
    assert cdr_key({"messageid": 784522, "phone": 15088888888}) == b"784522|8888"
    assert cdr_key({}) == b"|"
