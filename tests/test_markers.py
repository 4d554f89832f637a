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


def test_nor_can_it_fetch_or_start_the_schema_registry(tmp_path: Path) -> None:
    """Apicurio needs Java to run and Maven (Java too) to be fetched on a fresh machine: with
    the project's cache empty, an unmarked test fails at the fetch and names the mark."""
    from connector.local.registry import APICURIO_VERSION, LocalRegistry

    with pytest.raises(BrokerError, match=NOT_MARKED):
        LocalRegistry(tmp_path / "logs", cache_dir=tmp_path / "empty-cache").start()
    fetched = tmp_path / "warm-cache"
    app = fetched / f"apicurio-{APICURIO_VERSION}" / "app" / "quarkus-run.jar"
    app.parent.mkdir(parents=True)
    app.touch()
    with pytest.raises(BrokerError, match=NOT_MARKED):  # the newest JDK is refused too
        LocalRegistry(tmp_path / "logs", cache_dir=fetched).start()


REGISTRY_TESTS = (
    "test_registering_twice_keeps_the_ids",
    "test_an_incompatible_schema_is_refused_in_one_line",
    "test_a_release_rolled_back_finds_its_schema_registered_and_keeps_its_id",
)


def _collected(marks: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "-m", marks, "tests/test_registry.py"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode in (0, 5), run.stdout + run.stderr  # 5: nothing selected
    return {line.rsplit("::", 1)[1] for line in run.stdout.splitlines() if "::" in line}


def test_the_registry_fixture_marks_its_tests() -> None:
    """`-m "not kafka"` deselects every test that takes the registry, though its module
    does not mark it."""
    assert set(REGISTRY_TESTS) <= _collected("kafka")
    assert not set(REGISTRY_TESTS) & _collected("not kafka")
