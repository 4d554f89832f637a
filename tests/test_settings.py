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
