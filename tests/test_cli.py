"""`nxcloud-connector kafka` and `topics`, run as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector.local.broker import free_port
from tests.process_helpers import read_until, run_cli


def ignore_sigint() -> None:
    """As a job a script starts in the background (`&` without job control) begins."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def kafka_command(data_dir: Path, port: int, controller: int) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector",
            "kafka",
            f"--port={port}",
            f"--controller-port={controller}",
            f"--data-dir={data_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint,  # noqa: PLW1509
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def round_trip(bootstrap: str, topic: str, value: bytes | None) -> list[bytes]:
    if value is not None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=b"k")
        finally:
            await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10000)
        return [message.value for messages in batches.values() for message in messages]
    finally:
        await consumer.stop()


def stop(process: subprocess.Popen[str], signum: int) -> int:
    process.send_signal(signum)
    return process.wait(timeout=60)


@pytest.mark.kafka  # runs the `kafka` command
async def test_kafka_command_serves_keeps_data_and_topics_command_converges(
    tmp_path: Path,
) -> None:
    port, controller = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "NXCLOUD_TOPIC_PARTITIONS": "2"}
    payload = uuid.uuid4().bytes

    with kafka_command(tmp_path, port, controller) as kafka:
        line = read_until(kafka, "KAFKA_BOOTSTRAP_SERVERS=", time.monotonic() + 300)
        assert line == f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}"

        first = run_cli("topics", env=env)
        second = run_cli("topics", env=env)
        drift = run_cli("topics", "--check", env={**env, "NXCLOUD_TOPIC_PARTITIONS": "5"})
        bad = run_cli("topics", env={**env, "NXCLOUD_TOPIC_PARTITIONS": "none"})
        assert await round_trip(bootstrap, "nxcloud.voice.dead-letter", payload) == [payload]
        assert stop(kafka, signal.SIGTERM) == 0

    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created  ") == 7
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [
        "ok",
        "nxcloud.voice.dr.raw",
        "ok",
        "nxcloud.voice.cdr.raw",
        "ok",
        "nxcloud.voice.call-events",
        "ok",
        "nxcloud.voice.dead-letter",
        "ok",
        "nxcloud.voice.poller-state",
        "ok",
        "nxcloud.voice.observations",
        "ok",
        "nxcloud.voice.reconciliation",
    ]
    assert drift.returncode == 1
    assert "drift    nxcloud.voice.dr.raw: partitions is 2, declared 5" in drift.stdout
    assert bad.returncode == 3  # configuration
    assert "NXCLOUD_TOPIC_PARTITIONS" in bad.stderr

    with kafka_command(tmp_path, port, controller) as kafka:
        read_until(kafka, "KAFKA_BOOTSTRAP_SERVERS=", time.monotonic() + 120)
        assert await round_trip(bootstrap, "nxcloud.voice.dead-letter", None) == [payload]
        assert stop(kafka, signal.SIGINT) == 0


@pytest.mark.parametrize("command", [("topics",), ("tail", "--limit", "1"), ("topics", "--check")])
def test_unreachable_kafka_is_one_line_and_its_own_exit_code(command: tuple[str, ...]) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_cli(*command, env={"KAFKA_BOOTSTRAP_SERVERS": nobody})
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nxcloud-connector: ")
    assert nobody in lines[0] or "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_configuration_error_has_its_own_exit_code_and_names_the_variable() -> None:
    result = run_cli("tail", env={"NXCLOUD_POLLER_WINDOW_SECONDS": "90000"})
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "nxcloud-connector: invalid configuration: "
        "NXCLOUD_POLLER_WINDOW_SECONDS: must be at most 86400, got 90000"
    )


@pytest.mark.parametrize("command", ["topics", "receiver", "poller", "worker", "replay", "up"])
def test_every_command_says_where_its_configuration_comes_from(command: str) -> None:
    result = run_cli(command, "--help", env={})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Configuration comes from environment variables" in text
    assert "docs/configuration.md" in text


def env_file_of(line: str) -> Path:
    """The FILE in `  user  set -a; . FILE; set +a`."""
    return Path(line.split(". ", 1)[1].split(";", 1)[0])


def env_in(path: Path) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in path.read_text().splitlines() if entry)


@pytest.mark.kafka  # runs the `kafka` command
def test_kafka_secure_prints_per_user_settings_that_work_and_no_password(
    tmp_path: Path,
) -> None:
    port, controller = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "kafka", "--secure", f"--port={port}",
         f"--controller-port={controller}", f"--data-dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        operator_file = env_file_of(read_until(process, "  operator ", deadline))
        operator = env_in(operator_file)
        assert operator["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert operator["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{port}"
        created = run_cli("topics", env=operator)
        refused = run_cli("topics", env={**operator, "KAFKA_SASL_PASSWORD": "wrong"})
        receiver = env_in(operator_file.with_name("receiver.env"))
        denied = run_cli("topics", "--check", env=receiver)
        assert stop(process, signal.SIGTERM) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created  ") == 7
    assert refused.returncode == 4  # Kafka refused
    assert refused.stderr.strip() == (
        "nxcloud-connector: Kafka refused the SCRAM-SHA-512 login of user 'operator': "
        "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )
    assert denied.returncode == 4
    assert "Kafka ACLs deny user 'receiver'" in denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1
    assert operator["KAFKA_SASL_PASSWORD"] not in (created.stdout + created.stderr)
