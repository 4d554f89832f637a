"""The one Kafka client configuration, and the one-line explanations of refusals."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from faust.auth import SASLCredentials, SSLCredentials

from connector import clients, login
from connector.errors import KafkaAccessError
from connector.local.certs import Authority
from connector.settings import Secret, Settings


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


def sasl_ssl(authority: Authority, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "worker",
        "kafka_sasl_password": Secret("pw-s3cret"),
        "kafka_ssl_ca_file": authority.cert_file,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def test_plaintext_adds_nothing_but_the_protocol() -> None:
    assert clients.options(Settings(), acks="all") == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
        "acks": "all",
    }
    assert clients.broker_credentials(Settings()) is None


def test_sasl_ssl_gives_aiokafka_and_faust_the_same_login(authority: Authority) -> None:
    settings = sasl_ssl(authority)
    options = clients.options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "worker"
    assert login.current(options["sasl_plain_password"]) == "pw-s3cret"  # read at login
    assert "pw-s3cret" not in repr(options)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    credentials = clients.broker_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "worker"
    assert login.current(credentials.password) == "pw-s3cret"
    assert "pw-s3cret" not in repr(credentials)


def test_host_name_verification_is_turned_off_only_when_asked(authority: Authority) -> None:
    context = clients.ssl_context(sasl_ssl(authority, kafka_ssl_check_hostname=False))
    assert context is not None
    assert not context.check_hostname


def test_mutual_tls_loads_the_client_certificate(authority: Authority, tmp_path: Path) -> None:
    issued = authority.issue("client", "operator", password="key-pw")
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_file=authority.cert_file,
        kafka_ssl_cert_file=issued.cert, kafka_ssl_key_file=issued.key,
        kafka_ssl_key_password=Secret("key-pw"),
    )  # fmt: skip
    assert clients.security(settings)["security_protocol"] == "SSL"
    assert isinstance(clients.broker_credentials(settings), SSLCredentials)
    wrong = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cert_file=issued.cert,
        kafka_ssl_key_file=issued.key, kafka_ssl_key_password=Secret("not-key-pw"),
    )  # fmt: skip
    with pytest.raises(KafkaAccessError) as caught:
        clients.ssl_context(wrong)
    assert "KAFKA_SSL_KEY_PASSWORD" in str(caught.value)
    assert "not-key-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            SaslAuthenticationFailed("Authentication failed during authentication"),
            "Kafka refused the SCRAM-SHA-512 login of user 'worker': check "
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            TopicAuthorizationFailedError("nxcloud.voice.call-events"),
            "Kafka ACLs deny user 'worker' access to a topic (nxcloud.voice.call-events): "
            "grant it (connector/acls.py, deploy/)",
        ),
        (
            GroupAuthorizationFailedError("nxcloud-worker"),
            "Kafka ACLs deny user 'worker' access to a consumer group (nxcloud-worker): "
            "grant it (connector/acls.py, deploy/)",
        ),
    ],
)
def test_a_refusal_is_one_line_naming_what_to_check(
    authority: Authority, error: Exception, expected: str
) -> None:
    wrapped = KafkaConnectionError("Unable to bootstrap")
    wrapped.__cause__ = error
    assert clients.explain(error, sasl_ssl(authority)) == expected
    assert clients.explain(wrapped, sasl_ssl(authority)) == expected


def test_an_untrusted_or_misnamed_certificate_names_the_variable(authority: Authority) -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 19, "self-signed certificate in chain"
    misnamed = ssl.SSLCertVerificationError(1, "certificate verify failed")
    misnamed.verify_code, misnamed.verify_message = 62, "Hostname mismatch"
    settings = sasl_ssl(authority)
    assert clients.explain(untrusted, settings) == (
        "TLS: the broker's certificate is not trusted (self-signed certificate in chain): "
        "check KAFKA_SSL_CA_FILE"
    )
    assert "KAFKA_SSL_CHECK_HOSTNAME" in (clients.explain(misnamed, settings) or "")


def test_an_outage_is_no_refusal(authority: Authority) -> None:
    assert clients.explain(KafkaConnectionError("refused"), sasl_ssl(authority)) is None
    assert clients.explain(ConnectionRefusedError(111, "refused"), Settings()) is None


async def test_a_renewed_client_certificate_is_presented_at_the_next_connection(
    authority: Authority, tmp_path: Path
) -> None:
    """A client certificate renewed in its mounted files (cert-manager, a Strimzi KafkaUser)
    is what the next TLS handshake presents, without a new client; a pair caught half
    written keeps the one in use. Real handshakes against a server that requires one."""
    server_files = authority.issue("server", "broker", ("127.0.0.1",))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority.cert_file)
    server.load_cert_chain(server_files.cert, server_files.key)
    server.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        writer.write(dict(field[0] for field in peer["subject"])["commonName"].encode())
        await writer.drain()
        writer.close()

    mounted = tmp_path / "mounted"
    mounted.mkdir()

    def mount(common_name: str) -> None:
        issued = authority.issue(common_name, common_name, password="key-pw")
        os.replace(issued.key, mounted / "tls.key")
        os.replace(issued.cert, mounted / "tls.crt")

    mount("first")
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_file=authority.cert_file,
        kafka_ssl_cert_file=mounted / "tls.crt", kafka_ssl_key_file=mounted / "tls.key",
        kafka_ssl_key_password=Secret("key-pw"),
    )  # fmt: skip
    context = clients.ssl_context(settings)
    assert isinstance(context, login.Certificates)
    listening = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server)
    port = listening.sockets[0].getsockname()[1]

    async def presented() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        said = (await reader.read()).decode()
        writer.close()
        return said

    async def until_presented(common_name: str) -> None:
        async with asyncio.timeout(30):
            while await presented() != common_name:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

    async with listening:
        assert await presented() == "first"
        mount("second")
        await until_presented("second")
        (mounted / "tls.key").write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nhalf")
        written = time.monotonic()
        async with asyncio.timeout(30):
            while context._looked_at <= written:  # until it has looked at the half-written key
                assert await presented() == "second"
        assert await presented() == "second"
        mount("third")
        await until_presented("third")
