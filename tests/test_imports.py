"""The core and the one-shot commands stay free of Faust: only the worker imports it."""

import subprocess
import sys

import pytest

FREE_OF_FAUST = [
    "acls", "admin", "cdr", "cli", "clients", "codec", "dr", "envelope", "keys", "merge",
    "normalize", "records", "replay", "schedule", "tail",
]  # fmt: skip


@pytest.mark.parametrize("module", FREE_OF_FAUST)
def test_a_core_module_does_not_import_faust(module: str) -> None:
    probe = f"import sys, connector.{module}; print(sorted(m for m in sys.modules if m == 'faust'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", f"connector.{module} imports Faust"


def test_the_probe_sees_faust_where_it_is_imported() -> None:
    probe = "import sys, connector.worker; print('faust' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "True"
