"""One version everywhere it is shown, the build-info metric on every component, and a
wheel that carries its license without the old license table's deprecation warning."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import connector
from connector.poller.loop import PollerMetrics
from connector.receiver.metrics import ReceiverMetrics
from connector.worker.telemetry import WorkerMetrics

ROOT = Path(__file__).parent.parent
KUSTOMIZATIONS = sorted((ROOT / "deploy").glob("**/kustomization.yaml"))


def shipped_version() -> str:
    """The version as `nxcloud-connector --version` prints it, from the package metadata."""
    done = subprocess.run([sys.executable, "-m", "connector", "--version"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def image_tags() -> dict[str, str]:
    """Each kustomization's tag for the image named nxcloud-connector, by its path."""
    tags = {}
    for path in KUSTOMIZATIONS:
        for image in yaml.safe_load(path.read_text()).get("images", []):
            if image["name"] == "nxcloud-connector":
                tags[str(path.relative_to(ROOT))] = image["newTag"]
    return tags


def build_info(registry: CollectorRegistry) -> dict[str, str]:
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "nxcloud_build_info":
            (sample,) = family.samples
            assert sample.value == 1
            return dict(sample.labels)
    raise AssertionError(f"no nxcloud_build_info in\n{text}")


def test_the_version_is_pyprojects_everywhere() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("nxcloud-connector") == declared, "reinstall: the metadata is stale"
    assert shipped_version() == connector.__version__ == declared
    tags = image_tags()
    assert set(tags) == {
        "deploy/base/kustomization.yaml",
        "deploy/overlays/dev/kustomization.yaml",
        "deploy/overlays/production/kustomization.yaml",
        "deploy/overlays/msk-iam/kustomization.yaml",
        "deploy/overlays/oidc/kustomization.yaml",
        "deploy/overlays/confluent-cloud/kustomization.yaml",
    }
    # The image with AWS's signer is the same release, tagged VERSION-msk-iam (`make image
    # EXTRAS=msk-iam`).
    released = {tag.removesuffix("-msk-iam") for tag in tags.values()}
    assert released == {declared}, f"the deploy/ image tags {tags} are not {declared}"
    assert tags["deploy/overlays/msk-iam/kustomization.yaml"] == f"{declared}-msk-iam"


def test_every_component_serves_its_build_info() -> None:
    wanted = {"version": connector.__version__, "python": platform.python_version()}
    for metrics in (ReceiverMetrics(), PollerMetrics(), WorkerMetrics()):
        assert build_info(metrics.registry) == wanted, type(metrics).__name__


def test_the_wheel_carries_the_license_and_builds_without_a_deprecation(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path)]
    done = subprocess.run([*pip_wheel, str(ROOT)], capture_output=True, text=True, check=True)
    output = done.stdout + done.stderr
    assert "deprecated" not in output.lower(), output
    (wheel,) = tmp_path.glob("nxcloud_connector-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = f"nxcloud_connector-{connector.__version__}.dist-info"
        assert archive.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_the_sbom_lists_the_images_exact_requirements() -> None:
    """deploy/sbom.cdx.json (`make sbom`) is current: one component per pinned requirement,
    at its version, under the project at its version."""
    pins = set()
    for line in (ROOT / "deploy" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins.add((name.lower().replace("_", "-"), pinned))
    sbom = json.loads((ROOT / "deploy" / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("nxcloud-connector", connector.__version__)
    listed = {(c["name"].lower().replace("_", "-"), c["version"]) for c in sbom["components"]}
    assert listed == pins, "run `make sbom`"
