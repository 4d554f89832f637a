"""A real Kafka broker for the whole session, and isolated topic names per test."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import start_local_kafka
from tests.secure_helpers import SecureKafka, started_secure_kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS when set; otherwise a local broker started once."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with start_local_kafka(tmp_path_factory.mktemp("kafka")) as local:
        yield local.bootstrap_servers


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A second local broker, secured as in production: SASL_SSL (SCRAM-SHA-512) and
    mutual TLS, ACLs enforced, one user per component with the grants of connector.acls."""
    with started_secure_kafka(tmp_path_factory.mktemp("secure-kafka")) as secure:
        yield secure


@pytest.fixture
def topic_names() -> TopicNames:
    return TopicNames().with_suffix(uuid.uuid4().hex[:10])


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_partitions=3)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: the Kafka-backed tests must really run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Apicurio Registry started once; its Confluent-compatible API's URL."""
    from connector.local.registry import LocalRegistry

    with LocalRegistry(tmp_path_factory.mktemp("apicurio")) as local:
        yield local.url


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's binaries); its URL."""
    from connector.local.postgres import LocalPostgres

    with LocalPostgres() as local:
        yield local.url


# The `kafka` marker: a test that needs Java, for Kafka (a broker, or its jars) or for Apicurio
# Registry, each fetched by Maven (itself Java) on a machine that lacks them. Tests that use a
# broker or registry fixture are marked here; tests that start a broker or the `kafka` and `up`
# commands themselves carry the mark in their module. `pytest -m "not kafka"` runs the rest.
KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "secure_kafka", "schema_registry"})
NOT_MARKED = "a-test-not-marked-kafka-starts-no-kafka"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka: needs Java: a Kafka broker (or its jars), or Apicurio Registry, both fetched by "
        "Maven on first use; deselect: -m 'not kafka'",
    )
    config.addinivalue_line(
        "markers",
        "image: builds or runs the image, whose Python is its own (not the one running pytest)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Setup, call and teardown alike: a test's own monkeypatch of JAVA_HOME is undone in
    its teardown, inside this."""
    with _no_kafka_unless_marked(item):
        return (yield)


@contextmanager
def _no_kafka_unless_marked(item: pytest.Item) -> Iterator[None]:
    """Keeps the marking honest: a test not marked `kafka` finds, in this process and in
    every process it starts, while its fixtures (of any scope) are set up, while it runs and
    while it is torn down, a `java` that refuses to run (for Kafka, for Maven and for Apicurio
    Registry), so starting either fails at once and names the missing mark."""
    if item.get_closest_marker("kafka") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAVA_HOME", str(_refusing_java_home()))
        patch.setenv("APICURIO_JAVA_HOME", str(_refusing_java_home()))
        yield


@functools.cache
def _refusing_java_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"{NOT_MARKED}-"))
    java = home / "bin" / "java"
    java.parent.mkdir()
    java.write_text(f'#!/bin/sh\necho "{NOT_MARKED}: mark the test kafka" >&2\nexit 1\n')
    java.chmod(0o755)
    return home


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """Each test starts with the logging its predecessors found: a test that configures the
    connector's logging (`logs.configure` quiets aiokafka) must not hide what the next one
    reads through caplog."""
    root = logging.getLogger()
    handlers, levels = root.handlers[:], {"": root.level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            levels[name] = logger.level
    yield
    root.handlers[:] = handlers
    for name, logger in [("", root), *logging.root.manager.loggerDict.items()]:
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))
