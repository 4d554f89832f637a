"""The OAUTHBEARER token provider against a real token endpoint (tests/oidc_helpers.py),
with the clock in the test's hand: kept, refreshed before it expires, backed off."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from connector import clients, oauth
from connector.oauth import OidcTokenProvider, TokenError, token_of
from connector.settings import Settings
from tests.oidc_helpers import Client, Issuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with Issuer({"app": Client("s3cret", "app", lifetime=100)}) as serving:
        yield serving


def provider(issuer: Issuer, clock: Clock, secret: str = "s3cret") -> OidcTokenProvider:
    return OidcTokenProvider(issuer.url + "/token", "app", lambda: secret, clock=clock,
                             audience="kafka", scope="kafka")  # fmt: skip


async def test_a_token_is_kept_and_refreshed_at_80_percent_of_its_lifetime(
    issuer: Issuer,
) -> None:
    clock = Clock()
    tokens = provider(issuer, clock)
    first = await tokens.token()
    clock.now += 79
    assert await tokens.token() == first
    assert issuer.requests == 1
    clock.now += 2
    assert await tokens.token() == issuer.issued[-1]
    assert issuer.requests == 2


async def test_a_failing_endpoint_is_backed_off_and_an_expired_token_never_used(
    issuer: Issuer,
) -> None:
    clock = Clock()
    tokens = provider(issuer, clock)
    held = await tokens.token()
    issuer.clients["app"].secret = "rotated-away"
    clock.now += 85  # time to refresh: refused, the held token is still valid
    assert await tokens.token() == held
    assert issuer.requests == 2
    clock.now += 0.5  # within the back-off: the endpoint is not asked
    assert await tokens.token() == held
    assert issuer.requests == 2
    clock.now += 20  # expired, and refused again: no token, one line saying why
    with pytest.raises(TokenError) as caught:
        await tokens.token()
    assert str(caught.value) == (
        "the OAuth token endpoint refused client 'app' (HTTP 401): check "
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL, KAFKA_SASL_OAUTHBEARER_CLIENT_ID and "
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"
    )
    assert issuer.requests == 3
    with pytest.raises(TokenError):  # backed off: 2 s now, the endpoint is not asked
        await tokens.token()
    assert issuer.requests == 3


async def test_an_unreachable_endpoint_names_the_variable() -> None:
    tokens = OidcTokenProvider("http://127.0.0.1:9/token", "app", lambda: "x", timeout=2)
    with pytest.raises(TokenError, match="cannot reach the OAuth token endpoint"):
        await tokens.token()


def test_an_answer_without_a_token_is_a_token_error() -> None:
    with pytest.raises(TokenError, match="no access_token"):
        token_of(b'{"token_type": "Bearer"}', 0.0)
    token = token_of(b'{"access_token": "abc", "expires_in": 50}', 10.0)
    assert (token.refresh_at, token.expires_at) == (50.0, 60.0)


def test_every_client_gets_the_one_token_provider_of_its_settings() -> None:
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
         "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example/token",
         "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "nxcloud-receiver",
         "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "client-secret-1"}
    )  # fmt: skip
    options = clients.security(settings)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert (
        options["sasl_oauth_token_provider"]
        is clients.security(settings)["sasl_oauth_token_provider"]
    )
    assert "sasl_plain_password" not in options
    assert "client-secret-1" not in repr(settings)


def test_oauth_settings_are_checked_at_start() -> None:
    from connector.errors import ConfigError

    with pytest.raises(ConfigError) as missing:
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "KAFKA_SASL_MECHANISM": "OAUTHBEARER"})  # fmt: skip
    assert "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL" in (
        str(missing.value)
    )
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM is not OAUTHBEARER"):
        Settings.from_env({"KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "x"})


def test_sasl_payloads_are_hidden_from_aiokafkas_debug_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka.protocol.admin import SaslAuthenticateRequest

    oauth.hide_sasl_payloads()
    caplog.set_level(logging.DEBUG)
    request = SaslAuthenticateRequest(b"n,,\x01auth=Bearer the-token\x01\x01")
    logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "h", 1, 2, request)
    assert "the-token" not in caplog.text
    assert "<SASL payload hidden>" in caplog.text


def test_sasl_extensions_go_with_the_token() -> None:
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
         "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example/token",
         "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "c", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "s",
         "KAFKA_SASL_OAUTHBEARER_EXTENSIONS": "logicalCluster=lkc-1, identityPoolId=pool-2"}
    )  # fmt: skip
    provider = clients.security(settings)["sasl_oauth_token_provider"]
    assert provider.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}
