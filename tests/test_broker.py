"""Preconditions of the local broker give one clear error each."""

import base64
from pathlib import Path

import pytest

from connector.errors import BrokerError
from connector.local import broker


def test_missing_java_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(BrokerError, match="Java 17 or newer is required"):
        broker.java_executable()


def test_missing_maven_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="Maven is required"):
        broker.classpath(cache_dir=tmp_path)


def test_kafka_home_must_be_a_distribution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match="is not a Kafka distribution"):
        broker.classpath()


def test_kafka_home_libs_are_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.4.0.jar").touch()
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    assert broker.classpath() == str(tmp_path / "libs" / "*")


def test_server_properties_bind_loopback_in_combined_kraft_mode(tmp_path: Path) -> None:
    properties = broker.BrokerConfig(tmp_path, port=9500).server_properties()
    assert "process.roles=broker,controller\n" in properties
    assert "listeners=PLAINTEXT://127.0.0.1:9500,CONTROLLER://127.0.0.1:9501\n" in properties
    assert "auto.create.topics.enable=false\n" in properties
    assert "controlled.shutdown.enable=false\n" in properties  # no other replica to hand to


@pytest.mark.kafka  # runs Kafka's storage tool
def test_a_cluster_id_that_starts_with_a_dash_is_formatted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One id in 64 starts with "-", which the storage tool took for an option."""
    dashed = base64.urlsafe_b64encode(b"\xf8" + bytes(15)).rstrip(b"=").decode()
    monkeypatch.setattr(broker, "_cluster_id", lambda: dashed)
    broker.LocalKafka(broker.BrokerConfig(tmp_path, port=broker.free_port())).prepare()
    assert f"cluster.id={dashed}\n" in (tmp_path / "data" / "meta.properties").read_text()


def test_a_cluster_is_one_quorum_of_all_nodes_with_production_replication(tmp_path: Path) -> None:
    configs = broker.cluster_configs(tmp_path, [9600, 9601, 9602], [9700, 9701, 9702])
    properties = [config.server_properties() for config in configs]
    voters = "controller.quorum.voters=1@127.0.0.1:9700,2@127.0.0.1:9701,3@127.0.0.1:9702\n"
    assert all(voters in text for text in properties)
    assert [f"node.id={n}\n" in text for n, text in enumerate(properties, 1)] == [True] * 3
    assert all("default.replication.factor=3\n" in text for text in properties)
    assert all("min.insync.replicas=2\n" in text for text in properties)
    assert all("controlled.shutdown.enable=true\n" in text for text in properties)
    assert len({config.cluster_id for config in configs}) == 1
    assert len({config.data_dir for config in configs}) == 3


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat() -> None:
    """An outgoing connection takes its local port from the ephemeral range: a port picked
    there could be taken by a client before its server binds it (the sandbox of `up` once
    exited with status 3 that way)."""
    low, high = broker._ephemeral_range()
    ports = [broker.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & {port + 1 for port in ports}
    assert all(not low <= port <= high and 1024 < port < 65535 for port in ports)
