"""Every dead-letter shape, pinned to the byte: consumers of the dead-letter topic read them."""

import base64
from pathlib import Path

import orjson
from aiokafka import errors

from connector import deadletters, delivery
from connector.frames import Damage, Entry
from tests.support import ARRIVAL

PROVENANCE = (
    b'"receipt_id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","received_at":"2026-11-23T10:00:00.123456Z",'
    b'"receiver":"rx-1","remote_addr":"203.0.113.9","method":"GET","content_type":""'
)


def test_a_refused_push_keeps_what_arrived_bounded_as_text_or_base64() -> None:
    letter = deadletters.refused_push(
        "bad", ARRIVAL, {"a": ""}, b"a=&b=\xff", query=b"q=%FF&r=1", request=b"G\xffT", limit=3
    )
    assert letter == (
        b'{"source":"receiver","reason":"bad",' + PROVENANCE + b',"fields":{"a":""},'
        b'"query_bytes":9,"query":"q=%","body_bytes":6,"body":"a=&",'
        b'"request_bytes":3,"request":null,"request_base64":"R/9U"}'
    )
    assert deadletters.refused_push("bad", ARRIVAL, None, b"ok") == (
        b'{"source":"receiver","reason":"bad",' + PROVENANCE + b',"fields":null,'
        b'"query":null,"body_bytes":2,"body":"ok"}'
    )


def test_an_unusable_record_names_where_it_was_read() -> None:
    assert deadletters.unusable_record("not json", "t.dr", 2, 7, b"\xff{") == (
        b'{"source":"worker","reason":"not json","topic":"t.dr","partition":2,"offset":7,'
        b'"value":"\xef\xbf\xbd{"}'
    )


def test_a_record_kafka_refused_is_reported_with_its_head_and_where_it_is_kept() -> None:
    refused = deadletters.refused_by_kafka(
        "Too big", Entry("t.dr", b"k|1", b"v\xff" * 3), kept=Path("/s/r/1"), receiver="rx-1"
    )
    assert refused == (
        b'{"source":"spool","reason":"Too big","receiver":"rx-1","topic":"t.dr","key":"k|1",'
        b'"value_bytes":6,"value_head":"v\xef\xbf\xbdv\xef\xbf\xbdv\xef\xbf\xbd","kept":"/s/r/1"}'
    )
    keyless = deadletters.refused_by_kafka(
        "Too big", Entry("t.dr", None, b"v"), kept=Path("/s/r/1"), receiver="rx-1"
    )
    assert b'"key":null,"value_bytes":1,"value_head":"v"' in keyless


def test_spool_damage_is_reported_with_its_place() -> None:
    reason = b'"reason":"corrupt spool frame: 40 bytes at offset 100 of segment 3"'
    assert deadletters.spool_damage(Damage(3, 100, 140, Path("/s/q")), "rx-1") == (
        b'{"source":"spool",' + reason + b',"receiver":"rx-1","segment":3,"offset":100,'
        b'"bytes":40,"kept":"/s/q"}'
    )
    assert deadletters.spool_damage(Damage(3, 100, 140), "rx-1").endswith(b'"kept":null}')


def test_a_dead_letter_keeps_the_raw_input_exactly_and_the_reason() -> None:
    letter = orjson.loads(
        deadletters.refused_push("bad", ARRIVAL, {"a": ""}, b"a=&b=\xff", query=b"q=%FF&r=1")
    )
    assert letter["reason"] == "bad"
    assert letter["fields"] == {"a": ""}
    assert letter["body"] is None
    assert base64.b64decode(letter["body_base64"]) == b"a=&b=\xff"
    assert (letter["query"], letter["query_bytes"]) == ("q=%FF&r=1", 9)
    assert letter["source"] == "receiver"


def test_a_dead_letter_is_bounded_and_says_how_much_arrived() -> None:
    letter = orjson.loads(deadletters.refused_push("big", ARRIVAL, None, b"x" * 100, limit=10))
    assert (letter["body"], letter["body_bytes"]) == ("x" * 10, 100)


def test_reports_are_bounded_and_name_the_reason(tmp_path: Path) -> None:
    entry = Entry("nxcloud.voice.dr.raw", b"k", b"v" * 2_000_000)
    report = orjson.loads(
        deadletters.refused_by_kafka(
            delivery.reason(errors.MessageSizeTooLargeError("too big")),
            entry,
            kept=tmp_path,
            receiver="r",
        )
    )
    assert (
        report["reason"] == "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError: too big"
    )
    assert report["value_bytes"] == 2_000_000
    assert len(report["value_head"]) == 4096
    damage = orjson.loads(deadletters.spool_damage(Damage(3, 100, 140, tmp_path / "q"), "r"))
    assert damage["reason"] == "corrupt spool frame: 40 bytes at offset 100 of segment 3"
