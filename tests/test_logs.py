"""One JSON log format everywhere: the level from NXCLOUD_LOG_LEVEL, no ANSI codes, httpx's
per-request lines only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from connector import logs
from connector.errors import ConfigError
from connector.settings import Settings


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_the_level_is_set_and_httpx_is_quiet_unless_debug() -> None:
    logs.configure(Settings.from_env({"NXCLOUD_LOG_LEVEL": "warning"}).log_level)
    assert logging.getLogger().level == logging.WARNING
    logs.configure("INFO")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    logs.configure("DEBUG")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_a_bad_level_fails_at_start_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="NXCLOUD_LOG_LEVEL"):
        Settings.from_env({"NXCLOUD_LOG_LEVEL": "loud"})


def test_a_line_is_json_without_ansi_codes_or_uvicorns_coloured_copy() -> None:
    record = logging.makeLogRecord({
        "name": "uvicorn.error", "levelname": "INFO", "levelno": logging.INFO,
        "msg": "Uvicorn running on \x1b[1mhttp://0.0.0.0:8080\x1b[0m",
        "color_message": "Uvicorn running on \x1b[1m%s\x1b[0m", "port": 8080,
    })  # fmt: skip
    line = logs.JsonFormatter().format(record)
    assert "\x1b" not in line
    entry = orjson.loads(line)
    assert entry["message"] == "Uvicorn running on http://0.0.0.0:8080"
    assert set(entry) == {"time", "level", "logger", "message", "port"}


def test_what_aiokafka_retries_by_itself_is_a_warning_and_the_rest_stays_an_error() -> None:
    """A coordinator or a leader not elected yet, as at every start, heals alone."""

    def logged(name: str, message: str) -> str:
        record = logging.makeLogRecord({
            "name": name, "levelname": "ERROR", "levelno": logging.ERROR, "msg": message,
        })  # fmt: skip
        assert logs.Retried().filter(record)
        return str(orjson.loads(logs.JsonFormatter().format(record))["level"])

    coordinator = "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    assert logged("aiokafka.consumer.group_coordinator", coordinator) == "warning"
    leader = "Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: TopicPartition"
    assert logged("aiokafka.consumer.fetcher", leader) == "warning"
    denied = "Unexpected error: [Error 29] TopicAuthorizationFailedError: nxcloud.voice.dr.raw"
    assert logged("aiokafka.consumer.fetcher", denied) == "error"
    assert logged("connector.worker", coordinator) == "error"  # only aiokafka's own
