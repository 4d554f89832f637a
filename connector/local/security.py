"""The local broker's secured mode: SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners,
certificates it generates, SCRAM users created at format time, ACLs enforced.

The KRaft controller listener stays PLAINTEXT on 127.0.0.1; its principal (ANONYMOUS) is
a super user so the broker can register with its own controller. Clients get no
PLAINTEXT listener.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connector.errors import BrokerError

ADMIN: Final = "admin"
MECHANISM: Final = "SCRAM-SHA-512"
HOSTS: Final = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Security:
    """Where the secured broker keeps its TLS files and user passwords, and its ports."""

    directory: Path
    sasl_port: int
    mtls_port: int
    users: tuple[str, ...] = ()
    # connections.max.reauth.ms: a client that cannot re-authenticate (aiokafka) is
    # disconnected after this long and logs in again; None: never (Kafka's default).
    reauth_ms: int | None = None
    # An OAUTHBEARER listener (SASL_SSL) validated by Kafka's own OIDC validator against
    # the JWKS of `issuer` (`{issuer}/jwks`); the token's `sub` is the user.
    oauth_port: int | None = None
    issuer: str | None = None
    audience: str = "kafka"

    @property
    def everyone(self) -> tuple[str, ...]:
        return (ADMIN, *(user for user in self.users if user != ADMIN))

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.pem"

    def cert_file(self, user: str) -> Path:
        return self.directory / f"{user}.crt"

    def key_file(self, user: str) -> Path:
        return self.directory / f"{user}.key"

    @property
    def _passwords_file(self) -> Path:
        return self.directory / "passwords.json"

    def passwords(self) -> dict[str, str]:
        """Each user's SCRAM password, made once and kept (storage is formatted once)."""
        known: dict[str, str] = {}
        if self._passwords_file.exists():
            known = json.loads(self._passwords_file.read_text())
        missing = [user for user in self.everyone if user not in known]
        if missing:
            known |= {user: secrets.token_urlsafe(18) for user in missing}
            self.directory.mkdir(parents=True, exist_ok=True)
            self._passwords_file.write_text(json.dumps(known))
            self._passwords_file.chmod(0o600)
        return known

    def prepare(self) -> None:
        """Certificates once: a CA, the broker's for 127.0.0.1 and localhost, one per user."""
        self.passwords()
        if self.keystore.exists() and all(self.cert_file(u).exists() for u in self.everyone):
            return
        try:
            from connector.local.certs import Authority  # an optional dependency
        except ImportError:
            raise BrokerError(
                "the secured broker makes its certificates with the cryptography package: "
                "pip install 'nxcloud-connector[secure-kafka]'"
            ) from None
        authority = Authority(self.directory)
        broker = authority.issue("broker", "localhost", HOSTS)
        self.keystore.write_bytes(broker.key.read_bytes() + broker.cert.read_bytes())
        self.keystore.chmod(0o600)
        for user in self.everyone:
            authority.issue(user, user)

    def format_args(self) -> list[str]:
        """StorageTool arguments creating the SCRAM users with the metadata log."""
        return [
            arg
            for user, password in self.passwords().items()
            if user in self.everyone
            for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")
        ]

    def properties(self, controller: int) -> dict[str, str]:
        admin = self.passwords()[ADMIN]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin}";'
        )
        reauth = (
            {} if self.reauth_ms is None else {"connections.max.reauth.ms": str(self.reauth_ms)}
        )
        oauth = "" if self.oauth_port is None else f",OAUTH://127.0.0.1:{self.oauth_port}"
        return (
            reauth
            | self.oauth_properties()
            | {
                "listeners": f"SASL_SSL://127.0.0.1:{self.sasl_port},"
                f"MTLS://127.0.0.1:{self.mtls_port},CONTROLLER://127.0.0.1:{controller}{oauth}",
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.sasl_port},"
                f"MTLS://127.0.0.1:{self.mtls_port}{oauth}",
                "inter.broker.listener.name": "SASL_SSL",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL,"
                "OAUTH:SASL_SSL",
                "sasl.enabled.mechanisms": MECHANISM,
                "sasl.mechanism.inter.broker.protocol": MECHANISM,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca_file),
                "listener.name.mtls.ssl.client.auth": "required",
                "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": f"User:{ADMIN};User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "false",
            }
        )

    def oauth_properties(self) -> dict[str, str]:
        if self.oauth_port is None or self.issuer is None:
            return {}
        handler = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
        return {
            "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
            "listener.name.oauth.oauthbearer.sasl.jaas.config": (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
            ),
            "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class": handler,
            "sasl.oauthbearer.jwks.endpoint.url": f"{self.issuer}/jwks",
            "sasl.oauthbearer.expected.issuer": self.issuer,
            "sasl.oauthbearer.expected.audience": self.audience,
        }

    def jvm_options(self) -> list[str]:
        """Kafka fetches only from URLs that a system property allows (Kafka 4.0 on)."""
        if self.issuer is None:
            return []
        return [f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={self.issuer}/jwks"]

    def oauth_env(self, client_id: str, client_secret: str) -> dict[str, str]:
        """The connector's settings for an OIDC client on the OAUTHBEARER listener."""
        assert self.oauth_port is not None
        assert self.issuer is not None
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.oauth_port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": f"{self.issuer}/token",
            "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": client_id,
            "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": client_secret,
            "KAFKA_SASL_OAUTHBEARER_AUDIENCE": self.audience,
            "KAFKA_SSL_CA_FILE": str(self.ca_file),
        }

    def sasl_env(self, user: str) -> dict[str, str]:
        """The connector's settings for `user` on the SASL_SSL listener."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.sasl_port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords()[user],
            "KAFKA_SSL_CA_FILE": str(self.ca_file),
        }

    def mtls_env(self, user: str) -> dict[str, str]:
        """The connector's settings for `user` on the mutual-TLS listener."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.mtls_port}",
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_FILE": str(self.ca_file),
            "KAFKA_SSL_CERT_FILE": str(self.cert_file(user)),
            "KAFKA_SSL_KEY_FILE": str(self.key_file(user)),
        }


def env_lines(env: dict[str, str], hide: Sequence[str] = ()) -> list[str]:
    return [
        f"{key}={'<see passwords.json>' if key in hide else value}" for key, value in env.items()
    ]
