"""One frozen settings object, read once from the environment at start."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector import redaction
from connector.cdr import LOOKBACK, MAX_WINDOW
from connector.errors import ConfigError

DEFAULT_CDR_URL: Final = "http://api2.nxcloud.com/api/voiceSms/getVoiceCdr"
WINDOW_SECONDS: Final = int(MAX_WINDOW.total_seconds())
QUERYABLE_SECONDS: Final = int(LOOKBACK.total_seconds())
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
log = logging.getLogger(__name__)


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks.

    One read from a file (`…_FILE`) is read again, at most once a second, each time it is
    revealed: a client that authenticates again takes a rotated Secret mounted as a volume.
    While the file is missing or empty (a rotation under way), the last value stands."""

    __slots__ = ("_failing", "_name", "_path", "_read_at", "_value")

    def __init__(self, value: str, path: Path | None = None, name: str = "") -> None:
        self._value = value
        self._path = path
        self._read_at = time.monotonic()
        self._name = name  # the variable naming the file, for the log
        self._failing = False

    @classmethod
    def from_file(cls, path: Path, name: str = "") -> Secret:
        value = _read_secret(path)
        if value is None:
            raise ValueError(f"cannot read a secret from {path} (missing, unreadable or empty)")
        return cls(value, path, name)

    @property
    def path(self) -> Path | None:
        return self._path

    def reveal(self) -> str:
        if self._path is not None and time.monotonic() - self._read_at >= REREAD_SECONDS:
            self._read_at = time.monotonic()
            value = _read_secret(self._path)
            if value is not None:
                self._value = value
            self._tell(value is None)
        return self._value

    def _tell(self, failing: bool) -> None:
        """Log once that the file cannot be used (the last value stands), once it can again."""
        if failing and not self._failing:
            log.warning(
                "secret file cannot be read, the last value read stays in use",
                extra={"variable": self._name, "file": str(self._path),
                       "reason": _unreadable(self._path)},
            )  # fmt: skip
        elif self._failing and not failing:
            log.info("secret file read again", extra={"variable": self._name})
        self._failing = failing

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (other._path, other._value) == (
            self._path,
            self._value,
        )

    def __hash__(self) -> int:
        return hash((self._path, self._value))


REREAD_SECONDS: Final = 1.0


def _read_secret(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _unreadable(path: Path | None) -> str:
    """Why `_read_secret` found nothing in `path`: missing, empty or unreadable."""
    if path is None:
        return ""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    try:
        return "empty" if not text.decode("utf-8").strip() else ""
    except UnicodeDecodeError:
        return "not UTF-8"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "nxcloud-connector"


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _store(raw: str) -> str:
    """Faust's table stores: memory://, or rocksdb:// (driven by rocksdict when installed)."""
    if raw.strip() not in {"memory://", "rocksdb://"}:
        raise ValueError("must be memory:// or rocksdb:// (RocksDB through rocksdict)")
    return raw.strip()


def _amount(raw: str) -> Decimal:
    """A non-negative decimal amount (money is never a float)."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError(f"must be a decimal amount, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"must be a decimal amount of 0 or more, got {raw!r}")
    return value


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _secret(raw: str) -> Secret:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Secret(raw.strip())


def _token(raw: str) -> Secret:
    """Printable ASCII without spaces (0x21-0x7E), at most 256 characters."""
    if not re.fullmatch(r"[\x21-\x7e]{1,256}", raw.strip()):
        raise ValueError("must be 1 to 256 printable ASCII characters, no spaces")
    return Secret(raw.strip())


def _int_at_least(minimum: int) -> Callable[[str], int]:
    return _int_between(minimum, None)


def _int_between(minimum: int, maximum: int | None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def _port(minimum: int) -> Callable[[str], int]:
    return _int_between(minimum, 65535)


def _bootstrap_servers(raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ValueError("must list at least one host:port")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} is not host:port")
    return ",".join(servers)


SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM")
TOKEN_MECHANISMS: Final = ("OAUTHBEARER", "AWS_MSK_IAM")  # no user name, no password
OAUTH_NEEDS: Final = (
    "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
    "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
    "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
)


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"true", "1", "yes", "on"}:
        return True
    if value in {"false", "0", "no", "off"}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _file(raw: str) -> Path:
    return Path(_text(raw))


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {raw!r}")
    return raw.strip()


def _networks(raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for part in raw.split(","):
        if part.strip():
            try:
                networks.append(ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not a network (CIDR)") from None
    return tuple(networks)


def _durations(raw: str) -> tuple[int, ...]:
    within = _int_between(1, QUERYABLE_SECONDS)
    values = tuple(within(part.strip()) for part in raw.split(",") if part.strip())
    return tuple(sorted(values))


def _timezone(raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r}") from None


def _uri_segment(raw: str) -> str:
    """Letters, digits and `-._~`: a URI path segment as it is (RFC 3986 unreserved)."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]+", raw.strip()):
        raise ValueError(f"must be letters, digits and -._~ only, got {raw!r}")
    return raw.strip()


def _pairs(raw: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value` (SASL extensions: letters only in keys, no `,` in values)."""
    pairs = []
    for part in (part.strip() for part in raw.split(",")):
        key, sep, value = part.partition("=")
        if part and (not sep or not re.fullmatch(r"[A-Za-z]+", key) or not value):
            raise ValueError(f"{part!r} is not key=value")
        if part:
            pairs.append((key, value))
    return tuple(pairs)


def _env(
    name: str,
    parse: Callable[[str], Any],
    default: Any = None,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    metadata = {"env": name, "parse": parse, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting, typed; docs/configuration.md lists them (tests/test_docs.py)."""

    kafka_bootstrap_servers: str = _env(
        "KAFKA_BOOTSTRAP_SERVERS", _bootstrap_servers, "127.0.0.1:9092"
    )
    kafka_security_protocol: str = _env(
        "KAFKA_SECURITY_PROTOCOL", _choice(SECURITY_PROTOCOLS), "PLAINTEXT"
    )
    kafka_sasl_mechanism: str | None = _env("KAFKA_SASL_MECHANISM", _choice(SASL_MECHANISMS))
    kafka_sasl_username: str | None = _env("KAFKA_SASL_USERNAME", _text)
    kafka_sasl_password: Secret | None = _env("KAFKA_SASL_PASSWORD", _secret, secret=True)
    kafka_ssl_ca_file: Path | None = _env("KAFKA_SSL_CA_FILE", _file)
    kafka_ssl_cert_file: Path | None = _env("KAFKA_SSL_CERT_FILE", _file)
    kafka_ssl_key_file: Path | None = _env("KAFKA_SSL_KEY_FILE", _file)
    kafka_ssl_key_password: Secret | None = _env("KAFKA_SSL_KEY_PASSWORD", _secret, secret=True)
    kafka_ssl_check_hostname: bool = _env("KAFKA_SSL_CHECK_HOSTNAME", _flag, True)
    # SASL OAUTHBEARER: OIDC client credentials (connector/oauth.py).
    kafka_oauth_token_url: str | None = _env("KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", _http_url)
    kafka_oauth_client_id: str | None = _env("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", _text)
    kafka_oauth_client_secret: Secret | None = _env(
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", _secret, secret=True
    )
    kafka_oauth_scope: str | None = _env("KAFKA_SASL_OAUTHBEARER_SCOPE", _text)
    kafka_oauth_audience: str | None = _env("KAFKA_SASL_OAUTHBEARER_AUDIENCE", _text)
    kafka_oauth_extensions: tuple[tuple[str, str], ...] = _env(
        "KAFKA_SASL_OAUTHBEARER_EXTENSIONS", _pairs, ()
    )
    # AWS_MSK_IAM (connector/iam.py): credentials from the usual AWS chain.
    kafka_aws_region: str | None = _env("KAFKA_AWS_REGION", _text)
    kafka_aws_profile: str | None = _env("KAFKA_AWS_PROFILE", _text)
    nxcloud_appkey: Secret | None = _env("NXCLOUD_APPKEY", _secret, secret=True)
    nxcloud_secretkey: Secret | None = _env("NXCLOUD_SECRETKEY", _secret, secret=True)
    nxcloud_cdr_url: str = _env("NXCLOUD_CDR_URL", _http_url, DEFAULT_CDR_URL)
    nxcloud_timezone: ZoneInfo = _env("NXCLOUD_TIMEZONE", _timezone, ZoneInfo("Asia/Shanghai"))
    topic_partitions: int = _env("NXCLOUD_TOPIC_PARTITIONS", _int_at_least(1), 6)
    topic_replication_factor: int = _env("NXCLOUD_TOPIC_REPLICATION_FACTOR", _int_at_least(1), 1)
    raw_retention_days: int = _env("NXCLOUD_RAW_RETENTION_DAYS", _int_at_least(1), 30)
    dead_letter_retention_days: int = _env(
        "NXCLOUD_DEAD_LETTER_RETENTION_DAYS", _int_at_least(1), 90
    )
    receiver_id: str = _env("NXCLOUD_RECEIVER_ID", _text, factory=socket.gethostname)
    receiver_host: str = _env("NXCLOUD_RECEIVER_HOST", _text, "0.0.0.0")  # noqa: S104
    receiver_port: int = _env("NXCLOUD_RECEIVER_PORT", _port(1), 8080)
    receiver_token: Secret | None = _env("NXCLOUD_RECEIVER_TOKEN", _token, secret=True)
    receiver_allow_networks: tuple[IPv4Network | IPv6Network, ...] = _env(
        "NXCLOUD_RECEIVER_ALLOW_NETWORKS", _networks, ()
    )
    receiver_trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = _env(
        "NXCLOUD_RECEIVER_TRUSTED_PROXIES", _networks, ()
    )
    receiver_max_body_bytes: int = _env("NXCLOUD_RECEIVER_MAX_BODY_BYTES", _int_at_least(1), 65536)
    receiver_max_fields: int = _env("NXCLOUD_RECEIVER_MAX_FIELDS", _int_at_least(1), 64)
    receiver_read_timeout_seconds: int = _env(
        "NXCLOUD_RECEIVER_READ_TIMEOUT_SECONDS", _int_at_least(1), 10
    )
    receiver_max_head_bytes: int = _env(
        "NXCLOUD_RECEIVER_MAX_HEAD_BYTES", _int_at_least(256), 16384
    )
    receiver_max_headers: int = _env("NXCLOUD_RECEIVER_MAX_HEADERS", _int_at_least(1), 64)
    receiver_head_timeout_seconds: int = _env(
        "NXCLOUD_RECEIVER_HEAD_TIMEOUT_SECONDS", _int_at_least(1), 5
    )
    receiver_idle_timeout_seconds: int = _env(
        "NXCLOUD_RECEIVER_IDLE_TIMEOUT_SECONDS", _int_at_least(1), 15
    )
    receiver_kafka_timeout_ms: int = _env(
        "NXCLOUD_RECEIVER_KAFKA_TIMEOUT_MS", _int_at_least(1), 2000
    )
    # The receiver's internet-facing edge: a management port of its own, TLS, a cap.
    receiver_management_host: str = _env(
        "NXCLOUD_RECEIVER_MANAGEMENT_HOST",
        _text,
        "0.0.0.0",  # noqa: S104
    )
    receiver_management_port: int = _env("NXCLOUD_RECEIVER_MANAGEMENT_PORT", _port(0), 9101)
    receiver_tls_cert_file: Path | None = _env("NXCLOUD_RECEIVER_TLS_CERT_FILE", _file)
    receiver_tls_key_file: Path | None = _env("NXCLOUD_RECEIVER_TLS_KEY_FILE", _file)
    receiver_max_connections: int = _env("NXCLOUD_RECEIVER_MAX_CONNECTIONS", _int_at_least(1), 2000)
    receiver_management_max_connections: int = _env(
        "NXCLOUD_RECEIVER_MANAGEMENT_MAX_CONNECTIONS", _int_at_least(1), 64
    )
    receiver_locked_seconds: int = _env("NXCLOUD_RECEIVER_LOCKED_SECONDS", _int_at_least(1), 60)
    receiver_allow_anyone: bool = _env("NXCLOUD_RECEIVER_ALLOW_ANYONE", _flag, False)
    spool_dir: Path = _env("NXCLOUD_SPOOL_DIR", Path, factory=lambda: default_state_dir() / "spool")
    spool_max_bytes: int = _env("NXCLOUD_SPOOL_MAX_BYTES", _int_at_least(1), 1 << 30)
    account: str = _env("NXCLOUD_ACCOUNT", _text, "default")
    topic_suffix: str = _env("NXCLOUD_TOPIC_SUFFIX", _text, "")
    poller_window_seconds: int = _env(
        "NXCLOUD_POLLER_WINDOW_SECONDS", _int_between(1, WINDOW_SECONDS), 300
    )
    poller_settle_seconds: int = _env("NXCLOUD_POLLER_SETTLE_SECONDS", _int_at_least(0), 120)
    poller_repoll_after_seconds: tuple[int, ...] = _env(
        "NXCLOUD_POLLER_REPOLL_AFTER_SECONDS", _durations, (600, 3600, 21600, 86400)
    )
    poller_first_lookback_seconds: int = _env(
        "NXCLOUD_POLLER_FIRST_LOOKBACK_SECONDS", _int_between(0, QUERYABLE_SECONDS), 3600
    )
    poller_page_size: int = _env("NXCLOUD_POLLER_PAGE_SIZE", _int_at_least(1), 100)
    poller_min_interval_ms: int = _env("NXCLOUD_POLLER_MIN_INTERVAL_MS", _int_at_least(1), 1100)
    poller_http_timeout_seconds: int = _env(
        "NXCLOUD_POLLER_HTTP_TIMEOUT_SECONDS", _int_at_least(1), 15
    )
    poller_credentials_retry_seconds: int = _env(
        "NXCLOUD_POLLER_CREDENTIALS_RETRY_SECONDS", _int_at_least(1), 300
    )
    worker_store: str = _env("NXCLOUD_WORKER_STORE", _store, "memory://")
    worker_state_days: int = _env("NXCLOUD_WORKER_STATE_DAYS", _int_at_least(8), 8)
    worker_expiry_interval_seconds: int = _env(
        "NXCLOUD_WORKER_EXPIRY_INTERVAL_SECONDS", _int_at_least(1), 3600
    )
    worker_data_dir: Path = _env(
        "NXCLOUD_WORKER_DATA_DIR", Path, factory=lambda: default_state_dir() / "worker"
    )
    poller_metrics_port: int = _env("NXCLOUD_POLLER_METRICS_PORT", _port(0), 9102)
    worker_metrics_port: int = _env("NXCLOUD_WORKER_METRICS_PORT", _port(0), 9103)
    metrics_host: str = _env("NXCLOUD_METRICS_HOST", _text, "0.0.0.0")  # noqa: S104
    worker_dr_grace_seconds: int = _env(
        "NXCLOUD_WORKER_DR_GRACE_SECONDS", _int_at_least(1), 4 * 3600
    )
    # Restarts without a stall (docs/kubernetes.md): a stable instance id (the
    # pod's name) for static membership, a session that outlasts a restart.
    worker_instance_id: str = _env("NXCLOUD_WORKER_INSTANCE_ID", _text, "")
    worker_session_timeout_seconds: int = _env(
        "NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS", _int_between(6, 1800), 10
    )
    log_level: str = _env("NXCLOUD_LOG_LEVEL", _log_level, "INFO")
    # The call-event contract: whose events they are, and how long the topic keeps a call.
    deployment: str = _env("NXCLOUD_DEPLOYMENT", _uri_segment, "default")
    call_event_retention_days: int = _env("NXCLOUD_CALL_EVENT_RETENTION_DAYS", _int_at_least(1), 90)
    # The schema registry (its Confluent-compatible API), and the wire format that uses it.
    registry_url: str | None = _env("NXCLOUD_REGISTRY_URL", _http_url)
    registry_username: str | None = _env("NXCLOUD_REGISTRY_USERNAME", _text)
    registry_password: Secret | None = _env("NXCLOUD_REGISTRY_PASSWORD", _secret, secret=True)
    registry_ca_file: Path | None = _env("NXCLOUD_REGISTRY_CA_FILE", _file)
    registry_wire_format: bool = _env("NXCLOUD_REGISTRY_WIRE_FORMAT", _flag, False)
    # Reconciliation (docs/reconciliation.md): its tolerances, and the reconciler's store.
    reconcile_seconds_tolerance: int = _env(
        "NXCLOUD_RECONCILE_SECONDS_TOLERANCE", _int_at_least(0), 1
    )
    reconcile_cost_tolerance: Decimal = _env(
        "NXCLOUD_RECONCILE_COST_TOLERANCE", _amount, Decimal(0)
    )
    reconciler_store: str = _env("NXCLOUD_RECONCILER_STORE", _store, "memory://")
    reconciler_data_dir: Path = _env(
        "NXCLOUD_RECONCILER_DATA_DIR", Path, factory=lambda: default_state_dir() / "reconciler"
    )
    reconciler_metrics_port: int = _env("NXCLOUD_RECONCILER_METRICS_PORT", _port(0), 9104)

    def __post_init__(self) -> None:
        problems = kafka_security_problems(self) + registry_problems(self)
        if problems:
            raise ConfigError("invalid Kafka security configuration: " + "; ".join(problems))
        problems = receiver_edge_problems(self)
        if problems:
            raise ConfigError("invalid receiver configuration: " + "; ".join(problems))

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable once; report every bad one, naming it, never its secret."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in fields(cls):
            name = spec.metadata["env"]
            raw = env.get(name)
            if spec.metadata["secret"] and env.get(f"{name}_FILE"):
                try:
                    values[spec.name] = secret_from_file(name, raw, env[f"{name}_FILE"])
                    spec.metadata["parse"](values[spec.name].reveal())
                except ValueError as exc:
                    problems.append(
                        str(exc) if f"{name}_FILE" in str(exc) else f"{name}_FILE: {exc}"
                    )
                continue
            if raw is None or (raw == "" and spec.metadata["secret"]):
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ValueError as exc:
                reason = "is invalid" if spec.metadata["secret"] else str(exc)
                problems.append(f"{name}: {reason}")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(**values)

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret these settings hold (tokens, passwords, keys)."""
        values = (getattr(self, spec.name) for spec in fields(self) if spec.metadata["secret"])
        return tuple(value for value in values if isinstance(value, Secret))

    def scrub(self, text: str) -> str:
        """`text` (what a provider or a broker said) with these settings' secrets masked."""
        return scrub(text, self.secrets())

    def credentials(self) -> tuple[Secret, Secret]:
        missing = [
            name
            for name, value in (
                ("NXCLOUD_APPKEY", self.nxcloud_appkey),
                ("NXCLOUD_SECRETKEY", self.nxcloud_secretkey),
            )
            if value is None
        ]
        if missing or self.nxcloud_appkey is None or self.nxcloud_secretkey is None:
            raise ConfigError(f"missing configuration: {', '.join(missing)} must be set")
        return self.nxcloud_appkey, self.nxcloud_secretkey


def secret_from_file(name: str, value: str | None, path: str) -> Secret:
    """`NAME_FILE`: the secret in a file (a mounted Secret), instead of `NAME` itself."""
    if value:
        raise ValueError(f"{name} and {name}_FILE: give one, not both")
    try:
        return Secret.from_file(Path(path.strip()), f"{name}_FILE")
    except ValueError as exc:
        raise ValueError(f"{name}_FILE: {exc}") from None


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """Mask each secret in `text`, in every form a provider may echo it (connector.redaction:
    %-encoded in part or whole, `+` read as a space, JSON escapes, base64 alone or paired)."""
    return redaction.mask(text, (secret.reveal() for secret in secrets))


def kafka_security_problems(settings: Settings) -> list[str]:
    """Contradictions among the KAFKA_* security settings, each naming its variables."""
    protocol, problems = settings.kafka_security_protocol, []
    problems += _oauth_problems(settings)
    if settings.kafka_uses_sasl and settings.kafka_sasl_mechanism not in TOKEN_MECHANISMS:
        missing = [
            name
            for name, value in (
                ("KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if value is None
        ]
        if missing:
            problems.append(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
    elif not settings.kafka_uses_sasl:
        given = [
            name
            for name, value in (
                ("KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if value is not None
        ]
        if given:
            problems.append(
                f"{', '.join(given)} given, but KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL"
                " (SASL_SSL or SASL_PLAINTEXT)"
            )
    files = (
        ("KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file),
        ("KAFKA_SSL_CERT_FILE", settings.kafka_ssl_cert_file),
        ("KAFKA_SSL_KEY_FILE", settings.kafka_ssl_key_file),
    )
    tls_given = [name for name, value in files if value is not None]
    if settings.kafka_ssl_key_password is not None:
        tls_given.append("KAFKA_SSL_KEY_PASSWORD")
    if not settings.kafka_uses_tls and tls_given:
        problems.append(
            f"{', '.join(tls_given)} given, but KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS"
            " (SSL or SASL_SSL)"
        )
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        problems.append("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together: set both")
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_key_file is None:
        problems.append("KAFKA_SSL_KEY_PASSWORD given without KAFKA_SSL_KEY_FILE")
    for name, path in files:
        if path is not None and not _readable(path):
            problems.append(f"{name}: cannot read {path}")
    return problems


def registry_problems(settings: Settings) -> list[str]:
    """Contradictions among the NXCLOUD_REGISTRY_* settings, each naming its variables."""
    problems = []
    if (settings.registry_username is None) != (settings.registry_password is None):
        problems.append("NXCLOUD_REGISTRY_USERNAME and its password go together: set both")
    if settings.registry_wire_format and settings.registry_url is None:
        problems.append("NXCLOUD_REGISTRY_WIRE_FORMAT=true needs NXCLOUD_REGISTRY_URL")
    path = settings.registry_ca_file
    if path is not None and not _readable(path):
        problems.append(f"NXCLOUD_REGISTRY_CA_FILE: cannot read {path}")
    return problems


def _oauth_problems(settings: Settings) -> list[str]:
    values = (
        settings.kafka_oauth_token_url,
        settings.kafka_oauth_client_id,
        settings.kafka_oauth_client_secret,
    )
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        missing = [name for name, value in zip(OAUTH_NEEDS, values, strict=True) if value is None]
        return [f"KAFKA_SASL_MECHANISM=OAUTHBEARER needs {', '.join(missing)}"] if missing else []
    aws = (settings.kafka_aws_region, settings.kafka_aws_profile)
    if settings.kafka_sasl_mechanism == "AWS_MSK_IAM":
        return (
            []
            if settings.kafka_aws_region
            else ["KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs KAFKA_AWS_REGION"]
        )
    if any(value is not None for value in aws):
        return ["KAFKA_AWS_* given, but KAFKA_SASL_MECHANISM is not AWS_MSK_IAM"]
    extra = (settings.kafka_oauth_scope, settings.kafka_oauth_audience)
    if any(value is not None for value in (*values, *extra)) or settings.kafka_oauth_extensions:
        return ["KAFKA_SASL_OAUTHBEARER_* given, but KAFKA_SASL_MECHANISM is not OAUTHBEARER"]
    return []


def receiver_edge_problems(settings: Settings) -> list[str]:
    """Contradictions among the receiver's ports and TLS files, each naming its variables;
    whether the files hold a certificate and its key is checked when the receiver starts."""
    problems = []
    if settings.receiver_management_port == settings.receiver_port:
        problems.append(
            f"NXCLOUD_RECEIVER_MANAGEMENT_PORT: must differ from NXCLOUD_RECEIVER_PORT"
            f" ({settings.receiver_port})"
        )
    if (settings.receiver_tls_cert_file is None) != (settings.receiver_tls_key_file is None):
        problems.append(
            "NXCLOUD_RECEIVER_TLS_CERT_FILE and NXCLOUD_RECEIVER_TLS_KEY_FILE go together: set both"
        )
    return problems


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as opened:
            opened.read(1)
    except OSError:
        return False
    return path.is_file()
