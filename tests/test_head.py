import pytest

from connector import head
from tests.support import PROVIDER_EXAMPLE


def test_the_provider_example_line_is_repaired_as_the_provider_meant_it() -> None:
    line = f"GET /sms/testVoiceDr?{PROVIDER_EXAMPLE} HTTP/1.1".encode()
    repaired = head.repair_target(line)
    assert repaired.startswith(b"GET /sms/testVoiceDr?phone=8615088888888&")
    assert b"start_time=2020-12-01%2000:00:00&" in repaired
    assert b"result=Successful%20connection&" in repaired
    assert repaired.endswith(b"&ivr_result= HTTP/1.1")
    assert repaired.count(b" ") == 2


def test_bytes_above_ascii_are_percent_encoded_and_the_rest_left_alone() -> None:
    assert head.repair_target(b"POST  /a?x=\xe6\x88\x90&y=%41 HTTP/1.0") == (
        b"POST /a?x=%E6%88%90&y=%41 HTTP/1.0"
    )


@pytest.mark.parametrize(
    "line",
    [
        b"GET /a",
        b"GET /a HTTP/2.0",
        b"GET",
        b"",
        b"GET  HTTP/1.1",
        b"GET /a b HTTP/1.1x",
        b"POST POST /a HTTP/1.1",
        b" /a b HTTP/1.1",
    ],
)
def test_a_line_without_an_http_1_version_is_left_for_the_parser_to_refuse(line: bytes) -> None:
    assert head.repair_target(line) == line


def test_only_the_request_line_is_repaired() -> None:
    raw = b"GET /a b HTTP/1.1\r\nX: a b\xff\r\n\r\n"
    assert head.repair(raw) == b"GET /a%20b HTTP/1.1\r\nX: a b\xff\r\n\r\n"
    assert head.target(raw) == b"/a b"
    assert head.method(raw) == "GET"


def test_the_end_of_the_head_and_its_lines() -> None:
    assert head.end_of_head(b"GET / HTTP/1.1\r\nA: 1\r\n") is None
    assert head.end_of_head(b"GET / HTTP/1.1\r\nA: 1\r\n\r\nbody") == 24
    assert head.end_of_head(b"GET / HTTP/1.1\nA: 1\n\nbody") == 21
    assert head.end_of_head(b"xx\r\n\r", 3) is None
    assert head.end_of_head(b"xx\r\n\r\n", 5) == 6
    assert head.line_count(b"GET / HTTP/1.1\r\nA: 1\r\nB") == 3
    assert head.line_count(b"GET / HTTP/1.1\r\nA: 1\r\n") == 2


@pytest.mark.parametrize(
    ("raw", "length"),
    [
        (b"POST / HTTP/1.1\r\n\r\n", 0),
        (b"POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\n", 12),
        (b"POST / HTTP/1.1\r\nContent-Length:  7 , 7\r\n\r\n", 7),
        (b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n", None),
        (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\n", None),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    ],
)
def test_the_declared_body_length(raw: bytes, length: int | None) -> None:
    assert head.body_length(raw) == length
