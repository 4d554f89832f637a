"""The `kafka` marker is honest: a test without it cannot start Kafka, in its own process or
in a command it runs, so `pytest -m "not kafka"` never starts a broker (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connector.errors import BrokerError
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from tests.conftest import NOT_MARKED


def test_a_test_not_marked_kafka_cannot_start_a_broker(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=NOT_MARKED):
        LocalKafka(BrokerConfig(tmp_path, port=free_port(), controller_port=free_port())).start()


def test_nor_can_a_command_it_runs(tmp_path: Path) -> None:
    ports = (f"--port={free_port()}", f"--controller-port={free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "connector", "kafka", *ports, f"--data-dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert NOT_MARKED in result.stderr


@pytest.fixture(scope="module")
def what_a_module_fixture_got(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = tmp_path_factory.mktemp("unmarked-module-broker")
    kafka = LocalKafka(BrokerConfig(data, port=free_port(), controller_port=free_port()))
    try:
        kafka.start()
    except BrokerError as exc:
        return str(exc)
    kafka.stop()
    return "a broker"


def test_nor_can_a_fixture_of_a_wider_scope_it_uses(what_a_module_fixture_got: str) -> None:
    """A module's own broker fixture is set up before a function-scoped fixture could
    hide Java: the check wraps the setup of every fixture the test uses."""
    assert NOT_MARKED in what_a_module_fixture_got
