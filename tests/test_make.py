"""The Makefile as a new user meets it: a Python outside the tested range stops it in one line,
a venv made by another Python is made anew, and `clean` says what it removes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV", "PYTHON")
    clean = {k: v for k, v in os.environ.items() if k not in inherited}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args], env={**clean, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def a_python(tmp_path: Path, version: str) -> Path:
    """A `python` that says it is `version` and can do nothing else."""
    fake = tmp_path / f"python{version}"
    fake.write_text(f'#!/bin/sh\necho "{version}"\n')
    fake.chmod(0o755)
    return fake


def test_the_range_is_the_one_pyproject_declares() -> None:
    declared = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.14"' in declared
    assert "PYTHONS := " + " ".join(PYTHONS) in (ROOT / "Makefile").read_text()
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in PYTHONS


def test_a_python_outside_the_range_stops_make_in_one_clear_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    for version in ("3.10.13", "3.14.0"):
        result = make("install", f"PYTHON={a_python(tmp_path, version)}", f"VENV={venv}")
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"is Python {version}; nxcloud-connector needs Python 3.11, 3.12 or 3.13" in lines[0]
        assert not venv.exists()
    missing = make("install", "PYTHON=no-such-python", f"VENV={venv}")
    assert "no-such-python is not a Python that runs" in missing.stderr
    assert make("-n", "clean", "PYTHON=no-such-python").returncode == 0  # cleaning needs none


def test_a_venv_made_by_another_python_is_made_anew(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "nxcloud-connector").touch()
    (venv / "made-by-python-3.10.13").touch()
    planned = make("-n", "install", f"PYTHON={sys.executable}", f"VENV={venv}")
    assert planned.returncode == 0, planned.stderr
    assert f"rm -rf {venv}\n{sys.executable} -m venv {venv}" in planned.stdout
    current = ".".join(map(str, sys.version_info[:3]))
    (venv / f"made-by-python-{current}").touch()
    (venv / "bin" / "nxcloud-connector").touch()  # newer than pyproject.toml and the mark
    kept = make("-n", "install", f"PYTHON={sys.executable}", f"VENV={venv}")
    assert "rm -rf" not in kept.stdout
    assert "pip install" not in kept.stdout


def test_clean_says_what_it_removes_and_keeps_the_data(tmp_path: Path) -> None:
    said = make("-n", "clean", "VENV=.venv", f"XDG_DATA_HOME={tmp_path}")
    assert re.search(r"Removing what make built: \.venv( \.venv-3\.1\d)* \.tools", said.stdout)
    assert f"the local data stays: {tmp_path}/nxcloud-connector" in said.stdout
    data = tmp_path / "nxcloud-connector" / "kafka"
    data.mkdir(parents=True)
    removed = make("clean-data", f"XDG_DATA_HOME={tmp_path}")
    assert removed.returncode == 0, removed.stderr
    assert f"Removing the local data: {tmp_path}/nxcloud-connector" in removed.stdout
    assert not data.parent.exists()
