"""deploy/Dockerfile built with buildah (`make image`) and run as the deployment runs it: as
UID 10001, the root file system read-only, only the manifests' volumes writable. In it:
`--version` and the label agree with the package, `schema call-event` prints the schema,
the receiver stores a push on the test's broker, and the worker's probe command passes once
the worker runs. The test prints how long the build took (tests/image_helpers.py)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import connector
from connector import schema
from connector.local.broker import free_port
from connector.topics import TopicNames
from tests.image_helpers import (
    ROOT,
    Buildah,
    StepFailed,
    build,
    debian_release,
    pinned_base,
    run_in,
    stand_in_base,
    step,
    volume,
)
from tests.kafka_helpers import read_topic
from tests.support import VERIFICATION

# The first test also waits for the build: debootstrap and pip in vfs take minutes.
# `image`: the image has a Python of its own, so these need not run on every host Python.
pytestmark = [pytest.mark.timeout(2400), pytest.mark.image]

IMAGE = "localhost/nxcloud-connector-test"
DR_PATH = "/nxcloud/voice/dr"


def container_of(component: str) -> dict[str, Any]:
    """The one container of deploy/base/COMPONENT.yaml's workload."""
    for document in yaml.safe_load_all(
        (ROOT / "deploy" / "base" / f"{component}.yaml").read_text()
    ):
        if document and document["kind"] in {"Deployment", "StatefulSet"}:
            (container,) = document["spec"]["template"]["spec"]["containers"]
            return dict(container)
    raise AssertionError(f"no workload in deploy/base/{component}.yaml")


def declared_volumes(component: str, tmp: Path) -> dict[str, Path]:
    """The component's writable volume mounts, each a fresh host directory."""
    mounts = container_of(component).get("volumeMounts", [])
    return {m["mountPath"]: volume(tmp, f"{component}-{m['name']}")
            for m in mounts if not m.get("readOnly")}  # fmt: skip


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The built image, mounted: its root file system on the host and its configuration."""
    buildah = Buildah()
    base = pinned_base()
    started = time.monotonic()
    if not buildah.has_image(base):  # never pulled here: no registry but the package ones
        base = stand_in_base(buildah, debian_release(base))
    based = time.monotonic()
    build(buildah, IMAGE, base)
    built = time.monotonic()
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():  # printed even while pytest captures output
        print(f"\nimage: base {base} ready in {based - started:.0f} s, "
              f"`make image` built it in {built - based:.0f} s")  # fmt: skip
    tag = f"{IMAGE}:{connector.__version__}"
    config = buildah.config(tag)
    try:
        with buildah.mounted(tag) as rootfs:
            yield rootfs, config
    finally:  # each run builds anew (no layer cache kept): keep only the stand-in base
        buildah("remove the image", "rmi", tag)
        buildah("remove dangling images", "rmi", "--prune")


@pytest.fixture(scope="module")
def msk_image(
    request: pytest.FixtureRequest, image: tuple[Path, dict[str, Any]]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The image with AWS's signer (`make image EXTRAS=msk-iam`), built after the plain one:
    every layer before the EXTRAS argument comes from the plain build's cache."""
    buildah = Buildah()
    base = pinned_base()
    if not buildah.has_image(base):
        base = stand_in_base(buildah, debian_release(base))
    started = time.monotonic()
    build(buildah, IMAGE, base, extras="msk-iam")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():
        print(
            f"\nimage: `make image EXTRAS=msk-iam` built it in {time.monotonic() - started:.0f} s"
        )
    tag = f"{IMAGE}:{connector.__version__}-msk-iam"
    try:
        with buildah.mounted(tag) as rootfs:
            yield rootfs, buildah.config(tag)
    finally:
        buildah("remove the msk-iam image", "rmi", tag)


def in_image(image: tuple[Path, dict[str, Any]], name: str, *argv: str, **kwargs: Any) -> str:
    rootfs, config = image
    return step(name, run_in(rootfs, config, argv, **kwargs), timeout=120)


def test_version_label_and_schema(image: tuple[Path, dict[str, Any]]) -> None:
    assert in_image(image, "--version", "--version").strip() == connector.__version__
    assert image[1]["Labels"]["org.opencontainers.image.version"] == connector.__version__
    printed = in_image(image, "schema call-event", "schema", "call-event")
    assert printed == schema.text("call-event")


def test_the_root_file_system_is_read_only(
    image: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    writable = declared_volumes("receiver", tmp_path)
    probe = ("import os, sys\n"
             "for path in sys.argv[1:]:\n"
             "    try:\n        open(os.path.join(path, 'probe'), 'w').close(); print(path, 'rw')\n"
             "    except OSError as e:\n        print(path, e.errno)\n")  # fmt: skip
    paths = ["/", "/opt/venv", "/var/lib/nxcloud-connector", *writable]
    out = in_image(image, "read-only root", "python", "-c", probe, *paths,
                   writable=writable, entrypoint=False)  # fmt: skip
    seen = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert seen == {"/": "30", "/opt/venv": "30", "/var/lib/nxcloud-connector": "30",
                    **dict.fromkeys(writable, "rw")}, out  # 30: EROFS  # fmt: skip


@contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """`command` in the background, its output in `log`; stopped as Kubernetes stops it."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(
    name: str, process: subprocess.Popen[str], log: Path, ready: Callable[[], bool], deadline: float
) -> None:
    """Poll `ready()` until it holds; StepFailed when the process ends or time is up."""
    end = time.monotonic() + deadline
    while not ready():
        if process.poll() is not None:
            raise StepFailed(name, f"exited {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > end:
            raise StepFailed(name, f"not ready within {deadline} s:\n{log.read_text()}")
        time.sleep(0.5)


def text_of(url: str) -> str | None:
    """The page at `url`, or None when nothing answers it with 200."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def answers(url: str) -> bool:
    return text_of(url) is not None


def kafka_env(kafka_bootstrap: str, suffix: str) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "NXCLOUD_TOPIC_SUFFIX": suffix,
            "NXCLOUD_TOPIC_PARTITIONS": "1", "NXCLOUD_LOG_LEVEL": "WARNING"}  # fmt: skip


def test_the_receiver_stores_a_push(
    image: tuple[Path, dict[str, Any]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    env = kafka_env(kafka_bootstrap, suffix)
    in_image(image, "topics", "topics", env=env)
    port, management = free_port(), free_port()
    env |= {"NXCLOUD_RECEIVER_HOST": "127.0.0.1", "NXCLOUD_RECEIVER_PORT": str(port),
            "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
            "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(management),
            "NXCLOUD_RECEIVER_ID": "image-test"}  # fmt: skip
    rootfs, config = image
    command = run_in(rootfs, config, ["receiver"], declared_volumes("receiver", tmp_path), env)
    push = f"http://127.0.0.1:{port}"
    # /healthz and /metrics: on the management port where the receiver has one (#22), on
    # the push port where it does not.
    served = [f"http://127.0.0.1:{management}", push]
    log = tmp_path / "receiver.log"
    with running(command, log) as process:
        healthy = lambda: any(answers(f"{base}/healthz") for base in served)  # noqa: E731
        wait_for("receiver /healthz", process, log, healthy, 120)
        response = httpx.post(f"{push}{DR_PATH}", data=VERIFICATION, timeout=30)
        assert (response.status_code, response.text) == (200, "success"), "receiver push"
        (metrics,) = [page for base in served if (page := text_of(f"{base}/metrics"))]
    dr_raw = TopicNames().with_suffix(suffix).dr_raw
    pushed = VERIFICATION["messageid"]
    landed = read_topic(kafka_bootstrap, dr_raw, lambda got: any(
        pushed in orjson.dumps(each).decode() for each in got), deadline=60)  # fmt: skip
    assert asyncio.run(landed), "the push is not on the raw topic"
    assert build_version(metrics) == connector.__version__, "the receiver's build info"


def build_version(metrics: str) -> str | None:
    """The version label of `nxcloud_build_info` in a metrics page."""
    for family in text_string_to_metric_families(metrics):
        if family.name == "nxcloud_build_info":
            return str(family.samples[0].labels["version"])
    return None


def test_the_workers_probe_passes_once_it_runs(
    image: tuple[Path, dict[str, Any]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    env = kafka_env(kafka_bootstrap, suffix)
    in_image(image, "topics", "topics", env=env)
    rootfs, config = image
    volumes = declared_volumes("worker", tmp_path)
    probe_argv = container_of("worker")["readinessProbe"]["exec"]["command"]
    probe = run_in(rootfs, config, probe_argv, volumes, env, entrypoint=False)
    before = subprocess.run(probe, capture_output=True, text=True, check=False)
    assert before.returncode == 1, f"the probe passed with no worker: {before}"
    port = free_port()
    env |= {"NXCLOUD_WORKER_METRICS_PORT": str(port)}
    log = tmp_path / "worker.log"
    with running(run_in(rootfs, config, ["worker"], volumes, env), log) as process:
        passes = lambda: subprocess.run(probe, capture_output=True, check=False).returncode == 0  # noqa: E731
        wait_for("worker probe", process, log, passes, 240)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert build_version(metrics) == connector.__version__, "the worker's build info"


# Signs an MSK IAM token as every Kafka client of the connector would (clients.token_provider,
# from the settings): signing is local, with the AWS credentials in the environment.
SIGN = """
import asyncio, base64, json
from urllib.parse import parse_qs, urlsplit
from connector import clients
from connector.settings import Settings
token = asyncio.run(clients.token_provider(Settings.from_env()).token())
url = urlsplit(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
query = parse_qs(url.query)
print(json.dumps({"host": url.netloc, "action": query["Action"][0],
                  "credential": query["X-Amz-Credential"][0],
                  "signed": bool(query["X-Amz-Signature"][0])}))
"""
MSK_ENV = {"KAFKA_BOOTSTRAP_SERVERS": "b-1.example.kafka.eu-west-1.amazonaws.com:9098",
           "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
           "KAFKA_AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
           "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
           "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


def test_the_msk_iam_image_signs_an_iam_login_and_the_plain_one_names_the_extra(
    image: tuple[Path, dict[str, Any]], msk_image: tuple[Path, dict[str, Any]]
) -> None:
    assert in_image(msk_image, "--version", "--version").strip() == connector.__version__
    labels = msk_image[1]["Labels"]
    assert labels["org.opencontainers.image.version"] == connector.__version__
    signed = orjson.loads(in_image(msk_image, "sign an MSK IAM token", "python", "-c", SIGN,
                                   env=MSK_ENV, entrypoint=False))  # fmt: skip
    assert signed["host"] == "kafka.eu-west-1.amazonaws.com"
    assert signed["action"] == "kafka-cluster:Connect"
    assert signed["credential"].startswith("AKIAIOSFODNN7EXAMPLE/")
    assert signed["credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert signed["signed"]
    rootfs, config = image
    command = run_in(rootfs, config, ["python", "-c", SIGN], env=MSK_ENV, entrypoint=False)
    plain = subprocess.run(command, capture_output=True, text=True, check=False)
    assert plain.returncode != 0
    assert "pip install 'nxcloud-connector[msk-iam]'" in plain.stderr
