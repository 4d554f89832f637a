"""TLS at the receiver's push port, over real sockets with the `ssl` module: a CA made here,
the provider's example as printed inside TLS, a certificate renewed on disk, old protocols,
stalled and plain-text handshakes; real clients that send their ClientHello at once (Python's
ssl, curl and `openssl s_client`), and connections reset before, during and after their
handshake, all counted out. (The receiver's own process, on uvloop, under storms of them:
tests/test_receiver_flood.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.storm import (
    client_hello,
    close_after,
    handshake_storm,
    real_clients,
    reset_after,
    reset_in_handshake,
    storm,
)
from connector.local.certs import Authority
from connector.settings import Settings
from connector.topics import TopicNames
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


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "ca", name="receiver test CA")


@pytest.fixture
async def tls_server(
    settings: Settings, topic_names: TopicNames, tmp_path: Path, authority: Authority
) -> AsyncIterator[Server]:
    issued = authority.issue("push", "push.example", ("127.0.0.1",))
    secured = dataclasses.replace(
        edge_settings_of(settings, tmp_path),
        receiver_tls_cert_file=issued.cert,
        receiver_tls_key_file=issued.key,
    )
    async for running in start(secured, topic_names):
        yield running


def client_context(authority: Authority) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(authority.cert_file))
    context.check_hostname = True
    return context


async def open_tls(
    server: Server, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(15):
        return await asyncio.open_connection(
            server.host, server.port, ssl=context, server_hostname="127.0.0.1"
        )


def served_certificate(writer: asyncio.StreamWriter) -> bytes:
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return der


async def test_the_provider_example_as_printed_is_stored_over_tls(
    tls_server: Server, authority: Authority
) -> None:
    reader, writer = await open_tls(tls_server, client_context(authority))
    raw = b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("tls-1"), HOST)
    assert b" 00:00:00&" in raw
    writer.write(raw)
    async with asyncio.timeout(15):
        reply = await read_reply(reader)
    writer.close()
    assert (reply.status, reply.body) == (200, b"success")
    stored = await tls_server.stored("tls-1")
    assert stored["fields"]["start_time"] == "2020-12-01 00:00:00"
    assert stored["fields"]["result"] == "Successful connection"


async def test_a_certificate_renewed_on_disk_serves_the_next_connection(
    tls_server: Server, authority: Authority
) -> None:
    context = client_context(authority)
    first_reader, first_writer = await open_tls(tls_server, context)
    cert_file = tls_server.settings.receiver_tls_cert_file
    key_file = tls_server.settings.receiver_tls_key_file
    assert cert_file is not None
    assert key_file is not None
    before = served_certificate(first_writer)

    renewed = authority.issue("renewed", "push.example", ("127.0.0.1",))
    for source, target in ((renewed.key, key_file), (renewed.cert, cert_file)):
        os.replace(source, target)  # atomically, as a mounted Secret changes
    _, second_writer = await open_tls(tls_server, context)
    after = served_certificate(second_writer)
    second_writer.close()

    first_writer.write(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("tls-in-flight"), HOST))
    async with asyncio.timeout(15):
        reply = await read_reply(first_reader)
    first_writer.close()
    assert before != after
    assert after == ssl.PEM_cert_to_DER_cert(cert_file.read_text())
    assert reply.body == b"success"  # the connection in flight was not dropped


async def test_tls_1_1_is_refused_and_1_2_accepted(
    tls_server: Server, authority: Authority
) -> None:
    old = client_context(authority)
    with warnings.catch_warnings():  # deprecated: which is why the receiver refuses them
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await open_tls(tls_server, old)
    modern = client_context(authority)
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await open_tls(tls_server, modern)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_a_stalled_handshake_is_cut_and_plain_http_is_closed(tls_server: Server) -> None:
    reader, writer = await tls_server.open()
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a client hello, begun
    await writer.drain()
    assert await closed(reader, 15)
    writer.close()

    reader, writer = await tls_server.open()
    writer.write(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("plain-on-tls"), HOST))
    await writer.drain()
    assert await closed(reader, 15)
    writer.close()


async def test_a_tls_client_hello_on_the_plain_port_is_answered_or_closed(
    settings: Settings, topic_names: TopicNames, tmp_path: Path, authority: Authority
) -> None:
    async for plain in start(edge_settings_of(settings, tmp_path), topic_names):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await open_tls(plain, client_context(authority))
        reader, writer = await plain.open()
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200))
        await writer.drain()
        async with asyncio.timeout(15):
            reply = await read_reply(reader)
        assert await closed(reader, 15)
        writer.close()
        assert (reply.status, reply.body) in ((400, b"error"), (408, b"error"))


async def test_real_clients_that_send_their_hello_at_once_are_all_answered(
    tls_server: Server, authority: Authority
) -> None:
    counts = {"python-ssl": 60, "curl": 20, "openssl": 20}
    outcomes = await real_clients(tls_server.port, authority.cert_file, counts, concurrency=40)
    assert {name: dict(outcome) for name, outcome in outcomes.items()} == {
        name: {"success": count} for name, count in counts.items()
    }
    stored = await tls_server.stored("real-openssl-1")  # the example as printed, raw spaces
    assert stored["fields"]["result"] == "Successful connection"


async def metric(server: Server, name: str) -> float:
    reply = await server.send(b"GET /metrics HTTP/1.1\r\n\r\n", port=server.management)
    for line in reply.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_connections_reset_before_during_and_after_the_handshake_are_counted_out(
    tls_server: Server, authority: Authority
) -> None:
    hello = client_hello()
    port = tls_server.port
    failed = await asyncio.gather(
        storm(port, 300, reset_after(0), concurrency=40),
        storm(port, 300, reset_after(0.01), concurrency=40),
        storm(port, 300, reset_after(0.05), concurrency=40),
        storm(port, 300, reset_in_handshake(hello), concurrency=40),
        storm(port, 300, close_after(0.01), concurrency=40),
        handshake_storm(port, 200, client_context(authority), concurrency=40),
    )
    assert list(failed) == [0] * 6
    deadline = asyncio.get_running_loop().time() + 30
    while (held := await metric(tls_server, "nxcloud_receiver_connections")) > 0:
        assert asyncio.get_running_loop().time() < deadline, f"{held:.0f} still counted"
        await asyncio.sleep(0.2)
    assert held == 0  # each counted out once: never below zero
    reader, writer = await open_tls(tls_server, client_context(authority))
    writer.write(b"GET %s?%s HTTP/1.1\r\n%s\r\n" % (DR, example("after-storm"), HOST))
    async with asyncio.timeout(15):
        reply = await read_reply(reader)
    writer.close()
    assert reply.body == b"success"
