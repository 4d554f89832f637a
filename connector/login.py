"""SASL PLAIN and SCRAM passwords read at each login, for every Kafka client.

aiokafka keeps the password it was given and uses it for every connection it opens. The
connector gives it a `LoginPassword` instead: a string that only says `**********`, with
the Secret behind it, and aiokafka's connections are taught (`install`, once) to reveal
that Secret when they log in. A Secret from a file (`KAFKA_SASL_PASSWORD_FILE`) is read
again then, so a producer, consumer or admin client that reconnects (the broker's
`connections.max.reauth.ms`, a broker restart) logs in with a rotated password without
being rebuilt: the receiver, the poller, the Faust worker and the commands alike.
"""

from __future__ import annotations

import functools
from typing import Any

from aiokafka.conn import AIOKafkaConnection, SaslPlainAuthenticator, ScramAuthenticator

from connector.settings import Secret

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


@functools.cache
def install() -> None:
    """aiokafka's connections log in with the password as it reads at login (once)."""
    AIOKafkaConnection.authenticator_plain = _plain
    AIOKafkaConnection.authenticator_scram = _scram


def password(secret: Secret) -> str:
    """What a client is given as `sasl_plain_password`: read again at each of its logins."""
    install()
    return LoginPassword(secret)
