"""The core, the commands, the receiver, the poller and the stand-ins stay free of Faust:
only the worker imports it."""

import subprocess
import sys

import pytest

FREE_OF_FAUST = [
    "acls", "admin", "cdr", "cli", "clients", "codec", "compat", "deadletters", "delivery", "dr",
    "envelope", "frames", "groups", "guard", "head", "identity", "manifests", "merge", "normalize",
    "outage",
    "records", "replay", "schedule", "schema", "settings", "tail", "topics", "reconciliation",
    "reconciler.loop", "reconciler.store", "reconciler.metrics",
    "receiver.app", "receiver.protocol", "receiver.publisher", "receiver.push", "receiver.spool",
    "receiver.states", "receiver.heap",
    "poller.loop", "poller.backfill", "local.sandbox", "local.broker", "local.stack",
]  # fmt: skip


@pytest.mark.parametrize("module", FREE_OF_FAUST)
def test_a_core_module_does_not_import_faust(module: str) -> None:
    probe = f"import sys, connector.{module}; print(sorted(m for m in sys.modules if m == 'faust'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", f"connector.{module} imports Faust"


def test_the_probe_sees_faust_where_it_is_imported() -> None:
    probe = "import sys, connector.worker.agents; print('faust' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("module", ["acls", "groups", "receiver.app"])
def test_the_receivers_access_needs_no_merge_and_no_phone_numbers(module: str) -> None:
    """The ACLs and group names the receiver's check uses pull in none of the worker's core."""
    heavy = ("connector.merge", "connector.normalize", "phonenumbers")
    probe = f"import sys, connector.{module}; print(sorted(set(sys.modules) & set({heavy!r})))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", f"connector.{module} imports {result.stdout.strip()}"
