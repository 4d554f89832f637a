"""One frozen settings object, read once from the environment at start."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector.errors import ConfigError

DEFAULT_CDR_URL: Final = "http://api2.nxcloud.com/api/voiceSms/getVoiceCdr"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _secret(raw: str) -> Secret:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Secret(raw.strip())


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _bootstrap_servers(raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ValueError("must list at least one host:port")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} is not host:port")
    return ",".join(servers)


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
    values = tuple(_int_at_least(1)(part.strip()) for part in raw.split(",") if part.strip())
    return tuple(sorted(values))


def _timezone(raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r}") from None


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
    """Every setting, typed; see the README's configuration table."""

    kafka_bootstrap_servers: str = _env(
        "KAFKA_BOOTSTRAP_SERVERS", _bootstrap_servers, "127.0.0.1:9092"
    )
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
    receiver_port: int = _env("NXCLOUD_RECEIVER_PORT", _int_at_least(1), 8080)
    receiver_token: Secret | None = _env("NXCLOUD_RECEIVER_TOKEN", _secret, secret=True)
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
    receiver_kafka_timeout_ms: int = _env(
        "NXCLOUD_RECEIVER_KAFKA_TIMEOUT_MS", _int_at_least(1), 2000
    )
    spool_dir: Path = _env("NXCLOUD_SPOOL_DIR", Path, factory=lambda: default_state_dir() / "spool")
    spool_max_bytes: int = _env("NXCLOUD_SPOOL_MAX_BYTES", _int_at_least(1), 1 << 30)
    account: str = _env("NXCLOUD_ACCOUNT", _text, "default")
    topic_suffix: str = _env("NXCLOUD_TOPIC_SUFFIX", _text, "")
    poller_window_seconds: int = _env("NXCLOUD_POLLER_WINDOW_SECONDS", _int_at_least(1), 300)
    poller_settle_seconds: int = _env("NXCLOUD_POLLER_SETTLE_SECONDS", _int_at_least(0), 120)
    poller_repoll_after_seconds: tuple[int, ...] = _env(
        "NXCLOUD_POLLER_REPOLL_AFTER_SECONDS", _durations, (600, 3600, 21600, 86400)
    )
    poller_first_lookback_seconds: int = _env(
        "NXCLOUD_POLLER_FIRST_LOOKBACK_SECONDS", _int_at_least(0), 3600
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
    poller_metrics_port: int = _env("NXCLOUD_POLLER_METRICS_PORT", _int_at_least(0), 9102)
    worker_metrics_port: int = _env("NXCLOUD_WORKER_METRICS_PORT", _int_at_least(0), 9103)
    worker_dr_grace_seconds: int = _env(
        "NXCLOUD_WORKER_DR_GRACE_SECONDS", _int_at_least(1), 4 * 3600
    )
    log_level: str = _env("NXCLOUD_LOG_LEVEL", _log_level, "INFO")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable once; report every bad one, naming it, never its secret."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in fields(cls):
            name = spec.metadata["env"]
            raw = env.get(name)
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
