"""SASL OAUTHBEARER tokens for every Kafka client, through aiokafka's token-provider hook.

OIDC client credentials: the token is fetched from the token endpoint when a client first
logs in, kept, and fetched again once 80% of its lifetime has passed (Kafka asks for it
at each login; a broker with `connections.max.reauth.ms` disconnects a client whose token
expired, and it logs in again with a fresh one). While the endpoint fails, it is asked
again only after a back-off (1 s doubling to 60 s), and each login fails in between with
one line saying why. Tokens never reach a log: `HideSaslPayloads` drops them from
aiokafka's DEBUG lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaError

from connector.errors import KafkaAccessError

REFRESH_AT: Final = 0.8  # of a token's lifetime
FIRST_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 60.0
CHECK = (
    "check KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL, KAFKA_SASL_OAUTHBEARER_CLIENT_ID and "
    "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"
)


class TokenError(KafkaAccessError, KafkaError):  # type: ignore[misc]
    """No token can be had: the line says why and what to check, never a secret. A
    KafkaError too, so aiokafka treats it as a failed login (logs it, tries again)."""

    def __str__(self) -> str:  # the line alone, not KafkaError's "TokenError: line"
        return " ".join(str(arg) for arg in self.args)


@dataclass(frozen=True)
class Token:
    value: str
    refresh_at: float  # on the provider's clock
    expires_at: float


def token_of(body: bytes, now: float) -> Token:
    """The token in a token endpoint's answer (RFC 6749 §5.1), when to refresh it, and when
    it expires; TokenError for an answer without one."""
    try:
        answer = orjson.loads(body)
        value = answer["access_token"]
        lifetime = float(answer.get("expires_in", 300))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise TokenError(f"the OAuth token endpoint gave no access_token: {CHECK}") from None
    if not isinstance(value, str) or not value or lifetime <= 0:
        raise TokenError(f"the OAuth token endpoint gave no usable access_token: {CHECK}")
    return Token(value, now + REFRESH_AT * lifetime, now + lifetime)


Post = Callable[[dict[str, str]], Awaitable[httpx.Response]]


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Client credentials grant, authenticated with HTTP Basic (as Kafka's own client)."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: Callable[[], str],
        *,
        scope: str | None = None,
        audience: str | None = None,
        extensions: tuple[tuple[str, str], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._client_id = client_id
        self._secret = client_secret  # read at each fetch: a rotated file applies
        self._form = {"grant_type": "client_credentials"}
        if scope:
            self._form["scope"] = scope
        if audience:
            self._form["audience"] = audience
        self._extensions = dict(extensions)
        self._clock = clock
        self._timeout = timeout
        self._token: Token | None = None
        self._failure: TokenError | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            now = self._clock()
            held = self._token
            if held is not None and now < held.refresh_at:
                return held.value
            if self._failure is not None and now < self._retry_at:
                return self._still_valid(held, now, self._failure)
            try:
                self._token = token_of(await self._fetch(), self._clock())
            except TokenError as exc:
                self._failure, self._retry_at = exc, now + self._backoff
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                return self._still_valid(held, now, exc)
            self._failure, self._backoff = None, FIRST_BACKOFF
            return self._token.value

    def extensions(self) -> dict[str, str]:
        """SASL extensions sent with the token (Confluent Cloud: logicalCluster,
        identityPoolId)."""
        return self._extensions

    def _still_valid(self, held: Token | None, now: float, failure: TokenError) -> str:
        if held is not None and now < held.expires_at:
            return held.value
        raise failure

    async def _fetch(self) -> bytes:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.post(
                    self._url, data=self._form, auth=(self._client_id, self._secret())
                )
        except httpx.HTTPError as exc:
            raise TokenError(
                f"cannot reach the OAuth token endpoint ({type(exc).__name__}): "
                "check KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"
            ) from None
        if response.status_code != 200:
            raise TokenError(
                f"the OAuth token endpoint refused client {self._client_id!r} "
                f"(HTTP {response.status_code}): {CHECK}"
            )
        return response.content


class HideSaslPayloads(logging.Filter):
    """aiokafka logs every request and response at DEBUG: not the SASL ones, which carry a
    bearer token (or a PLAIN password)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_sasl(arg) for arg in record.args):
            record.args = tuple("<SASL payload hidden>" if _sasl(a) else a for a in record.args)
        return True


def _sasl(arg: Any) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticate")


HIDE_SASL_PAYLOADS: Final = HideSaslPayloads()


def hide_sasl_payloads() -> None:
    """Install the filter on aiokafka's connection logger (once; idempotent)."""
    logging.getLogger("aiokafka.conn").addFilter(HIDE_SASL_PAYLOADS)
