"""Kafka client configuration from Settings: the one place every client takes it from.

Also the one-line explanations of why Kafka refused a client (a login, a certificate, an
ACL), which name the variable or ACL to check and never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from connector import iam, login, oauth
from connector.errors import KafkaAccessError
from connector.settings import TOKEN_MECHANISMS, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
LOGIN_REFUSED = (AuthenticationFailedError, SaslAuthenticationFailed, IllegalSaslStateError)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL: the CA to trust, the client certificate if any."""
    if not settings.kafka_uses_tls:
        return None
    context = login.Certificates.of(tls_files(settings))
    context.check_hostname = settings.kafka_ssl_check_hostname
    try:
        context.load_chain()
    except (ssl.SSLError, OSError):
        raise KafkaAccessError(
            "cannot load the client certificate: check KAFKA_SSL_CERT_FILE, "
            "KAFKA_SSL_KEY_FILE and KAFKA_SSL_KEY_PASSWORD"
        ) from None
    return context


def security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (producer, consumer, admin client, connection)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_uses_sasl:
        oauth.hide_sasl_payloads()
    if settings.kafka_sasl_mechanism in TOKEN_MECHANISMS:
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = token_provider(settings)
    elif settings.kafka_uses_sasl:
        assert settings.kafka_sasl_password is not None  # Settings checked it
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = login.password(settings.kafka_sasl_password)
    return options


@functools.cache
def token_provider(settings: Settings) -> AbstractTokenProvider:
    """The one OAUTHBEARER token provider of these settings, shared by every client."""
    login.install()  # a refused token fails the login (login.ChallengedOAuth)
    if settings.kafka_sasl_mechanism == "AWS_MSK_IAM":
        assert settings.kafka_aws_region is not None  # Settings checked it
        return iam.MskIamTokenProvider(
            iam.signer(settings.kafka_aws_region, settings.kafka_aws_profile)
        )
    assert settings.kafka_oauth_token_url is not None  # Settings checked them
    assert settings.kafka_oauth_client_id is not None
    assert settings.kafka_oauth_client_secret is not None
    return oauth.OidcTokenProvider(
        settings.kafka_oauth_token_url,
        settings.kafka_oauth_client_id,
        settings.kafka_oauth_client_secret.reveal,
        scope=settings.kafka_oauth_scope,
        audience=settings.kafka_oauth_audience,
        extensions=settings.kafka_oauth_extensions,
    )


def tls_files(settings: Settings) -> login.TlsFiles:
    """The TLS files the Kafka clients present. Their `stamp()` changes when a mounted
    certificate, key or CA is renewed: every client's context loads them again at its next
    handshake, and the receiver also replaces a producer that fails since. (A SASL password
    needs neither: every login reads it again, connector/login.py.)"""
    return login.TlsFiles(
        settings.kafka_ssl_ca_file,
        settings.kafka_ssl_cert_file,
        settings.kafka_ssl_key_file,
        settings.kafka_ssl_key_password,
    )


def options(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Everything an aiokafka client needs to reach the cluster, plus `extra`."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **security(settings), **extra}


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials`: it hands them to aiokafka as `security` does."""
    from faust.auth import (  # only the worker imports Faust
        OAuthCredentials,
        SASLCredentials,
        SSLCredentials,
    )

    context = ssl_context(settings)
    if settings.kafka_sasl_mechanism in TOKEN_MECHANISMS:
        oauth.hide_sasl_payloads()
        return OAuthCredentials(oauth_cb=token_provider(settings), ssl_context=context)
    if settings.kafka_uses_sasl:
        assert settings.kafka_sasl_password is not None
        oauth.hide_sasl_payloads()
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=login.password(settings.kafka_sasl_password),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(exc: BaseException, settings: Settings) -> str | None:
    """One line on why Kafka refused this client, or None when it is no refusal (an outage)."""
    user = settings.kafka_sasl_username
    for error in _chain(exc):
        if isinstance(error, KafkaAccessError):
            return str(error)
        if isinstance(error, LOGIN_REFUSED) and settings.kafka_sasl_mechanism == "AWS_MSK_IAM":
            return (
                "Kafka refused the MSK IAM login: check the IAM role's policy "
                "(python -m connector.manifests --iam) and KAFKA_AWS_REGION"
            )
        if isinstance(error, LOGIN_REFUSED) and settings.kafka_sasl_mechanism == "OAUTHBEARER":
            return (
                f"Kafka refused the OAUTHBEARER token of client {settings.kafka_oauth_client_id!r}"
                " (expired, or not for these brokers): check KAFKA_SASL_OAUTHBEARER_AUDIENCE, "
                "KAFKA_SASL_OAUTHBEARER_SCOPE and the token endpoint's client"
            )
        if isinstance(error, LOGIN_REFUSED):
            return (
                f"Kafka refused the {settings.kafka_sasl_mechanism} login of user {user!r}: "
                "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if isinstance(error, UnsupportedSaslMechanismError):
            return (
                f"Kafka does not offer SASL mechanism {settings.kafka_sasl_mechanism}: "
                "check KAFKA_SASL_MECHANISM"
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            if error.verify_code == HOSTNAME_MISMATCH:
                return (
                    "TLS: the broker's certificate is not for the host connected to: check "
                    "KAFKA_BOOTSTRAP_SERVERS (or, knowingly, KAFKA_SSL_CHECK_HOSTNAME=false)"
                )
            return (
                f"TLS: the broker's certificate is not trusted ({error.verify_message}): "
                "check KAFKA_SSL_CA_FILE"
            )
        if isinstance(error, ssl.SSLError):
            return (
                f"TLS handshake with Kafka failed ({error.reason or error.strerror}): check "
                "KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE"
            )
        denied = _denied(error, settings)
        if denied is not None:
            who = f"user {user!r}" if user else "the user of KAFKA_SSL_CERT_FILE"
            return f"Kafka ACLs deny {who} {denied}: grant it (connector/acls.py, deploy/)"
    return None


@contextlib.contextmanager
def refusals(settings: Settings) -> Iterator[None]:
    """A KafkaError that is a refusal leaves as a one-line KafkaAccessError; others as they are."""
    try:
        yield
    except KafkaError as exc:
        refusal = explain(exc, settings)
        if refusal is None:
            raise
        raise KafkaAccessError(refusal) from None


def _denied(error: BaseException, settings: Settings) -> str | None:
    detail = " ".join(str(arg) for arg in error.args if arg) if error.args else ""
    detail = settings.scrub(detail)  # the broker's words, never the connector's secrets
    on = f" ({detail})" if detail else ""
    if isinstance(error, TopicAuthorizationFailedError):
        return f"access to a topic{on}"
    if isinstance(error, GroupAuthorizationFailedError):
        return f"access to a consumer group{on}"
    if isinstance(error, ClusterAuthorizationFailedError):
        return f"a cluster operation{on} (an idempotent producer needs Write on its topics)"
    if isinstance(error, TransactionalIdAuthorizationFailed):
        return f"a transactional id{on}"
    return None


async def diagnose(settings: Settings, timeout: float = 15.0) -> str | None:  # noqa: ASYNC109
    """Open one connection as the clients would; why Kafka refuses it, or None."""
    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
    try:
        context = security(settings)
        async with asyncio.timeout(timeout):
            conn = await create_conn(host, int(port), request_timeout_ms=int(timeout * 1000),
                                     **context)  # fmt: skip
            conn.close()
    except (KafkaError, OSError, TimeoutError) as exc:
        return explain(exc, settings)
    except KafkaAccessError as exc:
        return str(exc)
    return None


async def refusal(exc: BaseException, settings: Settings) -> str | None:
    """Why Kafka refused: from the error itself, else from a fresh connection's failure
    (a client that cannot bootstrap only says so, its cause went to the log)."""
    explained = explain(exc, settings)
    if explained is None and settings.kafka_security_protocol != "PLAINTEXT":
        explained = await diagnose(settings, timeout=5.0)
    return explained


async def check(settings: Settings) -> None:
    """Raise KafkaAccessError when Kafka refuses these settings (not when it is down)."""
    reason = await diagnose(settings)
    if reason is not None:
        raise KafkaAccessError(reason)
