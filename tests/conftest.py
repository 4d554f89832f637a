"""A real Kafka broker for the whole session, and isolated topic names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.local.security import Security
from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import start_local_kafka
from tests.secure_helpers import SecureKafka, grant_everyone


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
    data = tmp_path_factory.mktemp("secure-kafka")
    security = Security(data / "tls", free_port(), free_port(), SecureKafka.USERS)
    config = BrokerConfig(
        data_dir=data, port=free_port(), controller_port=free_port(), security=security
    )
    with LocalKafka(config) as local:
        secure = SecureKafka(local, security)
        grant_everyone(secure)
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
