import os
from pathlib import Path

import pytest

from connector.worker import heartbeat


def test_a_missing_heartbeat_is_not_fresh(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "heartbeat"
    assert heartbeat.age(path, 1000.0) is None
    assert not heartbeat.fresh(path, 60, 1000.0)
    assert heartbeat.main([str(path), "60"]) == 1


def test_a_beat_is_fresh_until_it_is_older_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "heartbeat"
    heartbeat.beat(path)
    os.utime(path, (1000.0, 1000.0))
    assert heartbeat.age(path, 1030.0) == 30.0
    assert heartbeat.fresh(path, 60, 1060.0)
    assert not heartbeat.fresh(path, 60, 1060.5)


def test_the_probe_command_passes_on_a_fresh_beat_and_fails_on_a_stale_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "heartbeat"
    heartbeat.beat(path)
    assert heartbeat.main([str(path), "60"]) == 0
    os.utime(path, (0.0, 0.0))
    assert heartbeat.main([str(path), "60"]) == 1


def test_the_probe_command_needs_a_path_and_an_age() -> None:
    assert heartbeat.main(["only-a-path"]) == 2


def test_readiness_fails_saying_why_while_the_worker_waits_for_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "worker" / "heartbeat"
    heartbeat.beat(path)
    (path.parent / heartbeat.NOT_READY).write_text("schema registry: ConnectError\n")
    assert heartbeat.main([str(path), "60"]) == 0  # alive all the same
    assert heartbeat.main([str(path), "60", "--ready"]) == 1
    assert "not ready: schema registry: ConnectError" in capsys.readouterr().err
    (path.parent / heartbeat.NOT_READY).unlink()
    assert heartbeat.main([str(path), "60", "--ready"]) == 0
