from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connector.errors import ConfigError
from connector.settings import DEFAULT_CDR_URL, Secret, Settings


def test_defaults_are_documented_values() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.nxcloud_cdr_url == DEFAULT_CDR_URL
    assert settings.nxcloud_timezone == ZoneInfo("Asia/Shanghai")
    assert settings.nxcloud_appkey is None
    assert settings.raw_retention_days >= 30


def test_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
            "NXCLOUD_TIMEZONE": "UTC",
            "NXCLOUD_TOPIC_PARTITIONS": "12",
            "NXCLOUD_CDR_URL": "https://api.nxcloud.com/api/voiceSms/getVoiceCdr",
        }
    )
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9093"
    assert settings.nxcloud_timezone == ZoneInfo("UTC")
    assert settings.topic_partitions == 12
    assert settings.nxcloud_cdr_url.startswith("https://api.nxcloud.com")


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "is not host:port"),
        ("NXCLOUD_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("NXCLOUD_CDR_URL", "ftp://example", "must be an http(s) URL"),
        ("NXCLOUD_TOPIC_PARTITIONS", "zero", "must be an integer"),
        ("NXCLOUD_RAW_RETENTION_DAYS", "0", "must be at least 1"),
        ("NXCLOUD_WORKER_STORE", "rocksdict://", "must be memory:// or rocksdb://"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert f"{variable}: " in str(caught.value)
    assert reason in str(caught.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"NXCLOUD_TIMEZONE": "nowhere", "NXCLOUD_TOPIC_PARTITIONS": "-1"})
    assert "NXCLOUD_TIMEZONE" in str(caught.value)
    assert "NXCLOUD_TOPIC_PARTITIONS" in str(caught.value)


def test_secrets_never_show_themselves() -> None:
    settings = Settings.from_env({"NXCLOUD_APPKEY": "app-123", "NXCLOUD_SECRETKEY": "sec-456"})
    appkey, secretkey = settings.credentials()
    assert (appkey.reveal(), secretkey.reveal()) == ("app-123", "sec-456")
    for shown in (repr(settings), str(settings), str(appkey), f"{secretkey}"):
        assert "app-123" not in shown
        assert "sec-456" not in shown


def test_a_blank_secret_is_invalid_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"NXCLOUD_SECRETKEY": "   "})
    assert "NXCLOUD_SECRETKEY: is invalid" in str(caught.value)


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError, match="NXCLOUD_APPKEY, NXCLOUD_SECRETKEY"):
        Settings.from_env({}).credentials()


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.topic_partitions = 1  # type: ignore[misc]


def test_secret_equality_compares_values() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("NXCLOUD_POLLER_WINDOW_SECONDS", "86401", "must be at most 86400"),
        ("NXCLOUD_POLLER_FIRST_LOOKBACK_SECONDS", "604801", "must be at most 604800"),
        ("NXCLOUD_POLLER_REPOLL_AFTER_SECONDS", "600,700000", "must be at most 604800"),
        ("NXCLOUD_RECEIVER_PORT", "65536", "must be at most 65535"),
        ("NXCLOUD_POLLER_METRICS_PORT", "70000", "must be at most 65535"),
    ],
)
def test_a_documented_limit_is_checked_at_start(variable: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert f"{variable}: {reason}" in str(caught.value)


def test_the_limits_themselves_are_accepted() -> None:
    settings = Settings.from_env(
        {
            "NXCLOUD_POLLER_WINDOW_SECONDS": "86400",
            "NXCLOUD_POLLER_FIRST_LOOKBACK_SECONDS": "604800",
            "NXCLOUD_RECEIVER_PORT": "65535",
        }
    )
    assert settings.poller_window_seconds == 86400
    assert settings.poller_first_lookback_seconds == 604800
    assert settings.receiver_port == 65535


def test_kafka_security_defaults_to_plaintext_without_credentials() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism is None
    assert settings.kafka_ssl_check_hostname is True
    assert not settings.kafka_uses_sasl
    assert not settings.kafka_uses_tls


def test_sasl_ssl_settings_are_typed(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "receiver",
            "KAFKA_SASL_PASSWORD": "pw-123",
            "KAFKA_SSL_CA_FILE": str(ca),
            "KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password == Secret("pw-123")
    assert settings.kafka_ssl_ca_file == ca
    assert settings.kafka_ssl_check_hostname is False
    assert "pw-123" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
             "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_MECHANISM given, but"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_USERNAME": "u"}, "uses no SASL"),
        ({"KAFKA_SSL_CA_FILE": "/etc/hosts"}, "KAFKA_SSL_CA_FILE given, but"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": "/etc/hosts"},
            "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": "kp"},
            "KAFKA_SSL_KEY_PASSWORD given without KAFKA_SSL_KEY_FILE",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.crt"},
            "KAFKA_SSL_CA_FILE: cannot read /nonexistent/ca.crt",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL: must be one of"),
        ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME: must be true or false"),
    ],
)  # fmt: skip
def test_contradicting_kafka_security_fails_naming_the_variables(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert named in str(caught.value)


def test_a_kafka_password_never_shows_in_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"KAFKA_SASL_PASSWORD": "pw-hunter2", "KAFKA_SSL_KEY_PASSWORD": "kp-9"})
    assert "KAFKA_SASL_PASSWORD" in str(caught.value)
    assert "pw-hunter2" not in str(caught.value)
    assert "kp-9" not in str(caught.value)
