"""The receiver's HTTP edge over raw sockets: bytes written exactly as a client sends them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from connector.settings import Secret, Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic
from tests.receiver_helpers import (
    DR,
    HOST,
    Server,
    closed,
    edge_settings_of,
    example,
    read_reply,
    start,
)
from tests.support import EXAMPLE_FIELDS


@pytest.fixture
def edge_settings(settings: Settings, tmp_path: Path) -> Settings:
    return edge_settings_of(settings, tmp_path)


@pytest.fixture
async def server(edge_settings: Settings, topic_names: TopicNames) -> AsyncIterator[Server]:
    async for running in start(edge_settings, topic_names):
        yield running


@pytest.mark.parametrize("method", [b"GET", b"POST"])
async def test_the_provider_example_as_printed_is_stored_with_every_field(
    server: Server, method: bytes
) -> None:
    messageid = f"example-{method.decode()}"
    length = b"Content-Length: 0\r\n" if method == b"POST" else b""
    raw = b"%s %s?%s HTTP/1.1\r\n%s%s\r\n" % (method, DR, example(messageid), HOST, length)
    assert b" 00:00:00&" in raw
    assert b"=Successful connection&" in raw

    reply = await server.send(raw)

    assert (reply.status, reply.body) == (200, b"success")
    assert reply.headers["content-type"].startswith("text/plain")
    record = await server.stored(messageid)
    assert record["fields"] == {**EXAMPLE_FIELDS, "messageid": messageid}
    assert record["fields"]["start_time"] == "2020-12-01 00:00:00"
    assert record["method"] == method.decode()


async def test_a_form_body_with_raw_spaces_and_raw_utf8_in_the_target(server: Server) -> None:
    body = example("form-raw") + "&note=成功 接通".encode()
    raw = (
        b"POST %s?src=\xe6\x88\x90 x HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: %d\r\n\r\n%s" % (DR, HOST, len(body), body)
    )
    reply = await server.send(raw)
    assert (reply.status, reply.body) == (200, b"success")
    record = await server.stored("form-raw")
    assert record["fields"]["note"] == "成功 接通"
    assert record["fields"]["src"] == "成 x"
    assert record["fields"]["result"] == "Successful connection"


async def test_raw_bytes_that_are_not_utf8_are_refused_and_kept_exactly(server: Server) -> None:
    query = b"result=\xb3\xc9\xb9\xa6 x&" + example("gbk-raw")
    reply = await server.send(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, query, HOST))

    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "field 'result' is not valid utf-8"
    assert base64.b64decode(letter["query_base64"]) == query
    assert letter["fields"] is None


async def test_a_refused_upgrade_request_with_a_body_keeps_its_query_exactly(
    server: Server,
) -> None:
    """What follows an Upgrade header reaches the parser as a new message (found by
    tests/test_fuzz.py): the dead letter still holds the query as it was sent."""
    query = b"result=\xb3\xc9 x&" + example("upgrade-raw")
    raw = (
        b"POST %s?%s HTTP/1.1\r\n%sConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc" % (DR, query, HOST)
    )
    reply = await server.send(raw)

    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "field 'result' is not valid utf-8"
    assert base64.b64decode(letter["query_base64"]) == query


async def test_a_non_utf8_escape_keeps_query_and_body_and_names_the_reason(server: Server) -> None:
    body = example("gbk-escaped")
    query = b"result=%B3%C9%B9%A6%BD%D3%CD%A8&x=%FF"
    raw = (
        b"POST %s?%s HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (DR, query, HOST, len(body), body)
    )
    reply = await server.send(raw)

    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "field 'result' is not valid utf-8"
    assert letter["query"] == query.decode()
    assert letter["body"] == body.decode()


async def test_a_multipart_value_that_is_not_utf8_is_refused_and_kept(server: Server) -> None:
    parts = [
        b'--zz\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode())
        for name, value in {**EXAMPLE_FIELDS, "messageid": "mp-1"}.items()
    ]
    body = b"".join(parts) + b'--zz\r\nContent-Disposition: form-data; name="result"\r\n\r\n'
    body += b"\xb3\xc9\xb9\xa6\r\n--zz--\r\n"
    reply = await server.send(
        b"POST %s HTTP/1.1\r\n%sContent-Type: multipart/form-data; boundary=zz\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (DR, HOST, len(body), body)
    )
    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "field 'result' is not valid utf-8"
    assert base64.b64decode(letter["body_base64"]) == body


async def test_a_declared_gbk_charset_is_honoured(server: Server) -> None:
    body = (
        example("gbk-declared").replace(b"Successful connection", b"%B3%C9%B9%A6%BD%D3%CD%A8")
        + b"&raw=\xce\xb4\xbd\xd3\xcd\xa8"
    )
    raw = (
        b"POST %s HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded; charset=GBK\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (DR, HOST, len(body), body)
    )
    reply = await server.send(raw)
    assert (reply.status, reply.body) == (200, b"success")
    record = await server.stored("gbk-declared")
    assert (record["fields"]["result"], record["fields"]["raw"]) == ("成功接通", "未接通")


async def test_a_65_kb_url_is_refused_dead_lettered_and_closed(server: Server) -> None:
    target = DR + b"?" + example("long") + b"&pad=" + b"x" * 65000
    reader, writer = await server.open()
    writer.write(b"GET %s HTTP/1.1\r\n%s\r\n" % (target, HOST))
    await writer.drain()
    async with asyncio.timeout(10):
        reply = await read_reply(reader)
    assert await closed(reader, 15)
    writer.close()

    assert (reply.status, reply.body) == (431, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "request head exceeds 16384 bytes"
    assert letter["request"].startswith("GET /nxcloud/voice/dr?phone=8615088888888&")
    assert 16384 < letter["request_bytes"] <= 65536
    assert letter["method"] == "GET"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET /nxcloud/voice/dr?a=\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "unreadable HTTP request"),
        (b"G\xc3\xa9T /nxcloud/voice/dr HTTP/1.1\r\nHost: x\r\n\r\n", "unreadable HTTP request"),
        (b"GET /nxcloud/voice/dr HTTP/1.1\r\nBad Header\r\n\r\n", "unreadable HTTP request"),
        (b"GET /nxcloud/voice/dr HTTP/1.1\r\nContent-Length: x\r\n\r\n", "unreadable HTTP"),
    ],
)
async def test_what_the_parser_still_refuses_is_answered_error_and_dead_lettered(
    server: Server, raw: bytes, reason: str
) -> None:
    reply = await server.send(raw)
    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"].startswith(reason)
    assert base64.b64decode(letter.get("request_base64") or "") == raw or letter["request"] == (
        raw.decode()
    )


async def test_unreadable_requests_are_counted(server: Server) -> None:
    await server.send(b"GET %s?a=\x01 HTTP/1.1\r\n%s\r\n" % (DR, HOST))
    await server.send(b"GET %s HTTP/1.1\r\n%s%s\r\n" % (DR, HOST, b"X: y\r\n" * 65))
    metrics = await server.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", port=server.management)
    assert b'nxcloud_receiver_requests_total{outcome="unreadable_400"} 1.0' in metrics.body
    assert b'nxcloud_receiver_requests_total{outcome="unreadable_431"} 1.0' in metrics.body


async def test_too_many_header_lines_are_refused_with_431(server: Server) -> None:
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(70))
    reply = await server.send(b"GET %s HTTP/1.1\r\n%s%s\r\n" % (DR, HOST, headers))
    assert (reply.status, reply.body) == (431, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "more than 64 header lines"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def test_headers_that_never_end_are_cut_with_memory_flat(server: Server) -> None:
    async def endless() -> int:
        _, writer = await server.open()
        writer.write(b"GET %s HTTP/1.1\r\nX-Endless: " % DR)
        sent = 0
        try:
            async with asyncio.timeout(20):
                while sent < 200 << 20:
                    writer.write(b"a" * 65536)
                    await writer.drain()
                    sent += 65536
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
        return sent

    before = rss_kib()
    started = time.monotonic()
    sent = await asyncio.gather(*(endless() for _ in range(5)))
    elapsed = time.monotonic() - started
    grown_mib = (rss_kib() - before) / 1024
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    print(
        f"5 endless headers: sent {[s >> 10 for s in sent]} KiB, cut after {elapsed:.1f} s,"
        f" RSS grew {grown_mib:.1f} MiB (peak {peak_mib} MiB)"
    )
    assert all(s < 200 << 20 for s in sent)
    assert grown_mib < 40
    letters = await server.letters(5)
    assert {letter["reason"] for letter in letters} == {"request head exceeds 16384 bytes"}


async def test_a_header_trickling_at_one_byte_a_second_is_cut_with_408(server: Server) -> None:
    reader, writer = await server.open()
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"GET /nxcloud/voice/dr HTTP/1.1\r\nX-Slow: abcdefghij":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)

    trickling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(10):
            reply = await read_reply(reader)
        assert await closed(reader, 15)
    finally:
        trickling.cancel()
        writer.close()
    elapsed = time.monotonic() - started

    assert (reply.status, reply.body) == (408, b"error")
    print(f"trickling head answered 408 after {elapsed:.1f} s (head timeout 2 s)")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "request head not received within 2 s"
    assert "GET /nx".startswith(letter["request"][:7])


async def test_a_silent_connection_and_an_idle_keep_alive_are_closed(server: Server) -> None:
    reader, writer = await server.open()
    assert await closed(reader, 15)
    writer.close()

    reader, writer = await server.open()
    writer.write(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("keep-1"), HOST))
    reply = await read_reply(reader)
    assert reply.body == b"success"
    assert await closed(reader, 15)
    writer.close()


async def test_keep_alive_requests_each_get_the_lenient_reading(server: Server) -> None:
    first = b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("pipe-1"), HOST)
    body = example("pipe-2")
    second = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (DR, HOST, len(body), body)
    third = b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("pipe-3"), HOST)
    reader, writer = await server.open()
    writer.write(first + second + third)
    await writer.drain()
    async with asyncio.timeout(15):
        replies = [await read_reply(reader) for _ in range(3)]
    writer.close()
    assert [r.body for r in replies] == [b"success"] * 3
    assert (await server.stored("pipe-3"))["fields"]["result"] == "Successful connection"


async def test_after_a_413_the_connection_is_closed_not_read_on(server: Server) -> None:
    reader, writer = await server.open()
    writer.write(
        b"POST %s HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 300000000\r\n\r\n" % (DR, HOST)
    )
    sent = 0
    try:
        async with asyncio.timeout(20):
            while sent < 300_000_000:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
    except (ConnectionError, TimeoutError):
        pass
    print(f"413: {sent >> 20} MiB written before the server closed")
    reply = None
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        reply = await read_reply(reader)
    writer.close()
    assert sent < 16 << 20
    assert reply is None or (reply.status, reply.body) == (413, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "body of 300000000 bytes exceeds the 65536-byte limit"


async def test_after_a_408_body_timeout_the_connection_is_closed(server: Server) -> None:
    reader, writer = await server.open()
    writer.write(
        b"POST %s HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 500\r\n\r\nphone=86150" % (DR, HOST)
    )
    await writer.drain()
    async with asyncio.timeout(10):
        reply = await read_reply(reader)
    assert await closed(reader, 15)
    writer.close()
    assert (reply.status, reply.body) == (408, b"error")
    (letter,) = await server.letters(1)
    assert (letter["reason"], letter["body"]) == ("body not received within 2 s", "phone=86150")


async def test_a_body_cut_midway_is_dead_lettered_with_what_arrived_in_one_log_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, writer = await server.open()
    writer.write(
        b"POST %s HTTP/1.1\r\n%sContent-Length: 500\r\n\r\nphone=8615088888888&count" % (DR, HOST)
    )
    await writer.drain()
    writer.close()
    chunked = await server.send(
        b"POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nphone=\r\nZZ\r\n1234\r\n" % (DR, HOST)
    )

    assert (chunked.status, chunked.body) == (400, b"error")
    letters = await server.letters(2)
    by_body = {letter["body"]: letter["reason"] for letter in letters}
    assert by_body["phone=8615088888888&count"] == "body cut off after 25 bytes: client gone"
    assert by_body["phone="].startswith("body cut off after 6 bytes: unreadable HTTP request")
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize(
    ("method", "status", "reason"),
    [
        (b"PUT", 405, "method PUT is not GET or POST"),
        (b"OPTIONS", 405, "method OPTIONS is not GET or POST"),
        (b"DELETE", 405, "method DELETE is not GET or POST"),
        (b"PATCH", 405, "method PATCH is not GET or POST"),
        (b"FOO", 400, "unreadable HTTP request: "),  # not a method the parser knows
    ],
)
async def test_other_methods_are_answered_error_and_dead_lettered(
    server: Server, method: bytes, status: int, reason: str
) -> None:
    reply = await server.send(b"%s %s?%s HTTP/1.1\r\n%s\r\n" % (method, DR, example("m"), HOST))
    assert (reply.status, reply.body) == (status, b"error")
    assert reply.headers["content-type"].startswith("text/plain")
    (letter,) = await server.letters(1)
    assert letter["reason"].startswith(reason)


async def test_a_trailing_slash_is_the_dr_path_and_head_stores_nothing(server: Server) -> None:
    head = await server.send(b"HEAD %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("head-1"), HOST))
    slash = await server.send(b"GET %s/?%s HTTP/1.1\r\n%s\r\n" % (DR, example("slash-1"), HOST))
    assert (head.status, head.body) == (405, b"")
    assert head.headers["content-type"].startswith("text/plain")
    assert (slash.status, slash.body) == (200, b"success")
    records = await read_topic(
        server.settings.kafka_bootstrap_servers,
        server.names.dr_raw,
        lambda v: any(r["fields"]["messageid"] == "slash-1" for r in v),
    )
    assert [r["fields"]["messageid"] for r in records] == ["slash-1"]


async def test_the_field_limit_counts_query_and_body_together(server: Server) -> None:
    query = b"&".join(b"q%d=1" % i for i in range(40))
    body = b"&".join(b"b%d=1" % i for i in range(40))
    reply = await server.send(
        b"POST %s?%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
        % (DR, query, HOST, len(body), body)
    )
    assert (reply.status, reply.body) == (400, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "too many fields (80, at most 64) in query and body"
    assert (letter["query"], letter["body"]) == (query.decode(), body.decode())


async def test_a_refused_push_logs_no_dr_value_at_info(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = example("log-1").replace(b"8615088888888", b"86-150-777")
    reply = await server.send(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, bad, HOST))
    assert reply.body == b"error"
    await server.letters(1)
    logged = [orjson.dumps(vars(r), default=str) for r in caplog.records if r.levelno >= 20]
    assert any(b"push refused" in line for line in logged)
    assert not [line for line in logged if b"86-150-777" in line or b"log-1" in line]


async def test_a_second_forwarded_for_line_cannot_bypass_the_allow_list(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    from ipaddress import ip_network

    listed = dataclasses.replace(
        edge_settings,
        receiver_allow_networks=(ip_network("203.0.113.0/24"),),
        receiver_trusted_proxies=(ip_network("127.0.0.0/8"),),
    )
    async for running in start(listed, topic_names):
        forged = await running.send(
            b"GET %s?%s HTTP/1.1\r\n%sX-Forwarded-For: 203.0.113.9\r\n"
            b"X-Forwarded-For: 198.51.100.1\r\n\r\n" % (DR, example("xff-1"), HOST)
        )
        allowed = await running.send(
            b"GET %s?%s HTTP/1.1\r\n%sX-Forwarded-For: 198.51.100.1\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\n\r\n" % (DR, example("xff-2"), HOST)
        )
    assert [(r.status, r.body) for r in (forged, allowed)] == [(403, b"error"), (200, b"success")]


async def test_the_token_is_scrubbed_from_every_dead_letter(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    guarded = dataclasses.replace(edge_settings, receiver_token=Secret("s3cret-tok"))
    async for running in start(guarded, topic_names):
        invalid = await running.send(
            b"GET %s/s3cret-tok?token=s3cret-tok&voice_type=7 HTTP/1.1\r\n%s\r\n" % (DR, HOST)
        )
        unreadable = await running.send(b"GET %s/s3cret-tok?a=\x01 HTTP/1.1\r\n%s\r\n" % (DR, HOST))
        letters = await running.letters(2)
    assert [invalid.body, unreadable.body] == [b"error", b"error"]
    assert b"s3cret" not in orjson.dumps(letters)
    assert any("token=[redacted]" in (letter.get("query") or "") for letter in letters)


@pytest.mark.parametrize("path", [b"/metrics", b"/readyz", b"/healthz", b"/", b"/anything"])
async def test_the_push_port_reveals_nothing_but_the_management_port_does(
    server: Server, path: bytes
) -> None:
    pushed = await server.send(b"GET %s HTTP/1.1\r\n%s\r\n" % (path, HOST))
    managed = await server.send(b"GET %s HTTP/1.1\r\n%s\r\n" % (path, HOST), port=server.management)
    dr_on_management = await server.send(
        b"GET %s?messageid=mgmt-1 HTTP/1.1\r\n%s\r\n" % (DR, HOST), port=server.management
    )
    assert (pushed.status, pushed.body) == (404, b"error")
    assert pushed.headers["content-type"].startswith("text/plain")
    assert (dr_on_management.status, dr_on_management.body) == (404, b"error")
    if path in (b"/metrics", b"/readyz", b"/healthz"):
        assert managed.status == 200
    metrics = await server.send(b"GET /metrics HTTP/1.1\r\n%s\r\n" % HOST, port=server.management)
    assert b"nxcloud_receiver_requests_total" in metrics.body
    assert b'nxcloud_receiver_requests_total{outcome="not_found"} 2.0' in metrics.body


async def test_without_the_token_nothing_is_stored_not_even_a_dead_letter(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    guarded = dataclasses.replace(edge_settings, receiver_token=Secret("s3cret-tok"))
    async for running in start(guarded, topic_names):
        strangers = [
            await running.send(raw)
            for raw in (
                b"FOO /anything HTTP/1.1\r\n%s\r\n" % HOST,
                b"GET %s?voice_type=7 HTTP/1.1\r\n%s\r\n" % (DR, HOST),
                b"GET %s/wrong?a=\x01 HTTP/1.1\r\n%s\r\n" % (DR, HOST),
                b"GET %s?%s HTTP/1.1\r\n%s%s\r\n" % (DR, example("x"), HOST, b"X: y\r\n" * 70),
                b"\x16\x03\x01\x00\x05garbage\r\n\r\n",
            )
        ]
        mine = await running.send(b"GET %s/s3cret-tok?voice_type=8 HTTP/1.1\r\n%s\r\n" % (DR, HOST))
        letters = await running.letters(1)
        metrics = await running.send(b"GET /metrics HTTP/1.1\r\n\r\n", port=running.management)
    assert [(r.status, r.body) for r in strangers] == [(403, b"error")] * 5
    assert (mine.status, mine.body) == (400, b"error")
    # one partition, in order: a stranger's dead letter would come first
    assert [letter["query"] for letter in letters] == ["voice_type=8"]
    assert b'nxcloud_receiver_requests_total{outcome="forbidden"} 5.0' in metrics.body


ODD_TOKEN = "TOK+ORCHID/4f19=a2"


@pytest.mark.parametrize(
    "target",
    [
        b"%s?token=TOK%%2bORCHID%%2f4f19%%3da2&voice_type=7",
        b"%s?token=TOK%%2BORCHID%%2F4f19%%3Da2&voice_type=7",
        b"%s?voice_type=7&token=TOK%%2BORCHID/4f19%%3da2",
        b"%s?token=%%54OK%%2bORCHID%%2F4f19=a2&voice_type=7&again=TOK%%2bORCHID%%2f4f19%%3da2",
        b"%s/TOK+ORCHID/4f19=a2?voice_type=7",
        b"%s/TOK%%2bORCHID%%2f4f19%%3Da2?voice_type=7",
        b"%s/TOK+ORCHID%%2F4f19%%3da2/?voice_type=7&a=\x01",
    ],
)
async def test_the_token_is_accepted_and_scrubbed_in_any_encoding(
    edge_settings: Settings, topic_names: TopicNames, target: bytes
) -> None:
    guarded = dataclasses.replace(edge_settings, receiver_token=Secret(ODD_TOKEN))
    async for running in start(guarded, topic_names):
        reply = await running.send(b"GET %s HTTP/1.1\r\n%s\r\n" % (target % DR, HOST))
        letters = await running.letters(1)
    assert (reply.status, reply.body) == (400, b"error")  # past the token: an invalid DR
    stored = orjson.dumps(letters)
    assert b"ORCHID" not in stored
    assert (b"token=[redacted]" in stored) == (b"token=" in target)


async def test_the_token_is_scrubbed_as_a_field_name_deep_in_a_value_and_in_utf_16(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    guarded = dataclasses.replace(edge_settings, receiver_token=Secret(ODD_TOKEN))
    spelled = b"TOK%2BORCHID%2F4f19%3Da2"
    query = b"token=%s&%s=1&note=TOK%%25252BORCHID%%25252F4f19%%25253Da2&voice_type=7" % (
        spelled,
        spelled,
    )
    body = f"voice_type=7&note={spelled.decode()}&x={ODD_TOKEN}".encode("utf-16")
    async for running in start(guarded, topic_names):
        named = await running.send(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, query, HOST))
        wide = await running.send(
            b"POST %s/%s HTTP/1.1\r\n%sContent-Type: application/x-www-form-urlencoded;"
            b" charset=utf-16\r\nContent-Length: %d\r\n\r\n%s"
            % (DR, spelled, HOST, len(body), body)
        )
        letters = await running.letters(2)
    assert [(r.status, r.body) for r in (named, wide)] == [(400, b"error")] * 2
    assert b"ORCHID" not in orjson.dumps(letters)
    by_method = {letter["method"]: letter for letter in letters}
    fields = {"[redacted]": "1", "note": "[redacted]", "voice_type": "7"}
    assert by_method["GET"]["fields"] == fields
    stored_body = base64.b64decode(by_method["POST"]["body_base64"]).decode("utf-16")
    assert stored_body == "voice_type=7&note=[redacted]&x=[redacted]"


async def test_a_token_holding_a_slash_works_in_the_path(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    guarded = dataclasses.replace(edge_settings, receiver_token=Secret(ODD_TOKEN))
    async for running in start(guarded, topic_names):
        raw = await running.send(
            b"GET %s/TOK%%2BORCHID/4f19=a2?%s HTTP/1.1\r\n%s\r\n" % (DR, example("slash"), HOST)
        )
        encoded = await running.send(
            b"GET %s/TOK%%2BORCHID%%2F4f19%%3Da2/?%s HTTP/1.1\r\n%s\r\n"
            % (DR, example("slash-enc"), HOST)
        )
        assert (await running.stored("slash-enc"))["fields"]["result"] == "Successful connection"
    assert [(r.status, r.body) for r in (raw, encoded)] == [(200, b"success")] * 2


async def test_a_431_is_answered_even_with_1_3_mb_following(server: Server) -> None:
    target = DR + b"?" + example("long") + b"&pad=" + b"x" * 65000
    reader, writer = await server.open()
    writer.write(b"GET %s HTTP/1.1\r\n%s\r\n" % (target, HOST) + b"z" * 1_300_000)
    async with asyncio.timeout(20):
        reply = await read_reply(reader)
    writer.close()
    assert (reply.status, reply.body) == (431, b"error")
    (letter,) = await server.letters(1)
    assert letter["reason"] == "request head exceeds 16384 bytes"


async def test_a_push_port_locked_shut_is_not_live_and_says_why_once(
    edge_settings: Settings, topic_names: TopicNames, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    capped = dataclasses.replace(
        edge_settings,
        receiver_max_connections=3,
        receiver_head_timeout_seconds=120,
        receiver_read_timeout_seconds=120,
        receiver_locked_seconds=1,
    )

    async def probe(running: Server, path: bytes) -> tuple[int, bytes]:
        reply = await running.send(b"GET %s HTTP/1.1\r\n\r\n" % path, port=running.management)
        return reply.status, reply.body

    async def gauge(running: Server) -> float:
        reply = await running.send(b"GET /metrics HTTP/1.1\r\n\r\n", port=running.management)
        (line,) = [
            line
            for line in reply.body.decode().splitlines()
            if line.startswith("nxcloud_receiver_connections ")
        ]
        return float(line.split()[1])

    async def refused(running: Server) -> bool:
        reader, writer = await running.open()
        try:
            return await closed(reader, 5)
        finally:
            writer.close()

    async for running in start(capped, topic_names):
        # The cap held by requests in flight (bodies on their way): busy, not locked.
        busy = [await running.open() for _ in range(3)]
        for _, writer in busy:
            writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: 100\r\n\r\nphone=" % (DR, HOST))
        assert await refused(running)
        await asyncio.sleep(1.5)  # past NXCLOUD_RECEIVER_LOCKED_SECONDS
        assert await probe(running, b"/healthz") == (200, b"ok")
        for _, writer in busy:
            writer.close()

        # The cap held by connections that send nothing: every new one refused.
        deadline = time.monotonic() + 30
        while await gauge(running) > 0:  # the busy ones gone
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        held = [await running.open() for _ in range(3)]
        while await gauge(running) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await refused(running)
        while (health := await probe(running, b"/healthz"))[0] == 200:
            assert time.monotonic() < deadline, "still live"
            await asyncio.sleep(0.2)
        ready = await probe(running, b"/readyz")
        again = await probe(running, b"/healthz")
        for _, writer in held:
            writer.close()
        while await probe(running, b"/healthz") != (200, b"ok"):
            assert time.monotonic() < deadline, "not live again"
            await asyncio.sleep(0.2)
    why = b"the push port has refused every new connection for "
    assert health[0] == again[0] == 503
    assert health[1].startswith(b"not live: " + why)
    assert b"(3 of 3 open, 0 requests in flight)" in health[1]
    assert ready[0] == 503
    assert ready[1].startswith(b"not ready: " + why)
    told = [r for r in caplog.records if r.getMessage() == "push port locked shut, not live"]
    assert len(told) == 1
    assert [r.getMessage() for r in caplog.records].count("push port accepting connections again")


async def test_the_management_port_cuts_slow_heads_and_caps_its_connections(
    edge_settings: Settings, topic_names: TopicNames
) -> None:
    capped = dataclasses.replace(edge_settings, receiver_management_max_connections=2)
    async for running in start(capped, topic_names):
        silent = [await running.open(running.management) for _ in range(2)]
        third, writer = await running.open(running.management)
        assert await closed(third, 1.5)  # refused at once: two are open
        writer.close()
        for reader, writer in silent:
            assert await closed(reader, 15)  # cut after the head timeout
            writer.close()

        reader, writer = await running.open(running.management)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        async with asyncio.timeout(15):
            reply = await read_reply(reader)
        assert await closed(reader, 15)
        writer.close()
        metrics = await running.send(b"GET /metrics HTTP/1.1\r\n\r\n", port=running.management)
    assert (reply.status, reply.body) == (408, b"error")
    assert b"nxcloud_receiver_management_connections_refused_total 1.0" in metrics.body
    assert b"unreadable_408" not in metrics.body  # nothing dead-lettered, no push counted
