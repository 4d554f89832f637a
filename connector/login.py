"""SASL PLAIN and SCRAM passwords read at each login, and TLS files read at each handshake,
for every Kafka client.

aiokafka keeps the password it was given and uses it for every connection it opens. The
connector gives it a `LoginPassword` instead: a string that only says `**********`, with
the Secret behind it, and aiokafka's connections are taught (`install`, once) to reveal
that Secret when they log in. A Secret from a file (`KAFKA_SASL_PASSWORD_FILE`) is read
again then, so a producer, consumer or admin client that reconnects (the broker's
`connections.max.reauth.ms`, a broker restart) logs in with a rotated password without
being rebuilt: the receiver, the poller, the Faust worker and the commands alike.

Likewise a client's TLS context (`Certificates`) reads its certificate, key and CA files
again at a new connection once they changed, so a renewed client certificate (cert-manager,
a Strimzi KafkaUser's) takes effect at the next connection.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.conn import (
    AIOKafkaConnection,
    OAuthAuthenticator,
    SaslPlainAuthenticator,
    ScramAuthenticator,
)

from connector.settings import REREAD_SECONDS, Secret

MASK = "**********"


class LoginPassword(str):
    """A password aiokafka carries to each login; as text only the mask."""

    secret: Secret

    def __new__(cls, secret: Secret) -> LoginPassword:
        password = super().__new__(cls, MASK)
        password.secret = secret
        return password

    def __repr__(self) -> str:
        return f"LoginPassword({MASK!r})"


def current(password: Any) -> Any:
    """The password a login sends now: a LoginPassword's Secret as it reads now."""
    return password.secret.reveal() if isinstance(password, LoginPassword) else password


def _plain(connection: Any) -> SaslPlainAuthenticator:
    return SaslPlainAuthenticator(
        loop=connection._loop,
        sasl_plain_password=current(connection._sasl_plain_password),
        sasl_plain_username=connection._sasl_plain_username,
    )


def _scram(connection: Any) -> ScramAuthenticator:
    return ScramAuthenticator(
        loop=connection._loop,
        sasl_plain_password=current(connection._sasl_plain_password),
        sasl_plain_username=connection._sasl_plain_username,
        sasl_mechanism=connection._sasl_mechanism,
    )


class ChallengedOAuth(OAuthAuthenticator):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER login, answering the broker's error challenge (RFC 7628,
    3.2.2). A broker that refuses the token answers it with an error in JSON and waits for
    the client's `\x01` before it fails the login; aiokafka's own stops there and logs
    "Authenticated", and the broker drops the connection at its first request. Answered,
    the broker fails the login itself, naming the refusal (SaslAuthenticationFailed)."""

    _answered = False

    async def step(self, payload: bytes | None) -> tuple[bytes, bool] | None:
        if not self._token_sent:
            first: tuple[bytes, bool] | None = await super().step(payload)
            return first
        if payload and not self._answered:
            self._answered = True
            return b"\x01", True
        return None


def _oauth(connection: Any) -> ChallengedOAuth:
    return ChallengedOAuth(sasl_oauth_token_provider=connection._sasl_oauth_token_provider)


@functools.cache
def install() -> None:
    """aiokafka's connections log in with the password as it reads at login, and hear a
    refused OAUTHBEARER token out (once)."""
    AIOKafkaConnection.authenticator_plain = _plain
    AIOKafkaConnection.authenticator_scram = _scram
    AIOKafkaConnection.authenticator_oauth = _oauth


def password(secret: Secret) -> str:
    """What a client is given as `sasl_plain_password`: read again at each of its logins."""
    install()
    return LoginPassword(secret)


Stamp = tuple[int, int, int, int] | None


def stamp(path: Path | None) -> Stamp:
    """What changes when a mounted file is replaced (a Secret volume swaps a link, which
    `stat` follows): its device, inode, modification time and size; None while missing."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path | None
    cert: Path | None
    key: Path | None
    password: Secret | None

    def stamp(self) -> tuple[Stamp, ...]:
        """What changes when any of the files is replaced."""
        return tuple(stamp(path) for path in (self.ca, self.cert, self.key))


class Certificates(ssl.SSLContext):
    """A client TLS context that loads its files again, at a new connection, once they
    changed (looked at no more than once a second). A half-written pair that does not load
    keeps the certificate in use until the next look."""

    files: TlsFiles
    _stamp: tuple[Stamp, ...]
    _looked_at: float
    _lock: threading.Lock

    @classmethod
    def of(cls, files: TlsFiles) -> Certificates:
        """The context with the CA loaded; `load_chain` adds the client certificate."""
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.files, context._lock = files, threading.Lock()
        context._stamp, context._looked_at = files.stamp(), time.monotonic()
        context.load_ca()
        return context

    def load_ca(self) -> None:
        if self.files.ca is not None:
            self.load_verify_locations(cafile=str(self.files.ca))
        else:
            self.load_default_certs(ssl.Purpose.SERVER_AUTH)

    def load_chain(self) -> None:
        files = self.files
        if files.cert is not None and files.key is not None:
            password = None if files.password is None else files.password.reveal()
            self.load_cert_chain(str(files.cert), str(files.key), password=password)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        with self._lock:
            self._renew()
            return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        with self._lock:
            self._renew()
            return super().wrap_socket(*args, **kwargs)

    def _renew(self) -> None:
        if time.monotonic() - self._looked_at < REREAD_SECONDS:
            return
        self._looked_at = time.monotonic()
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return
        try:
            self.load_ca()
            self.load_chain()
        except (ssl.SSLError, OSError):
            return
        self._stamp = stamp
