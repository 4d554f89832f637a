"""deploy/monitoring/: the alert rules pass the pinned promtool's check and their unit tests,
and every metric the rules and the dashboard query is one the components really serve."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from connector.poller.loop import PollerMetrics
from connector.receiver.metrics import ReceiverMetrics
from connector.reconciler.metrics import ReconcilerMetrics
from connector.worker.telemetry import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\bnxcloud_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool() -> Path:
    """The promtool `make tools` built (`make test` passes it as PROMTOOL)."""
    found = re.search(r"^PROMTOOL_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile pins PROMTOOL_VERSION"
    default = ROOT / ".tools" / f"promtool-{found.group(1)}" / "promtool"
    path = Path(os.environ.get("PROMTOOL") or default)
    if not path.is_file():
        pytest.fail(f"promtool not found at {path}: run `make tools` (or `make test`)")
    return path


def rule_groups() -> dict[str, Any]:
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    groups: dict[str, Any] = resource["spec"]
    return groups


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(promtool()), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(MONITORING / "rules.test.yaml", tmp_path / "rules.test.yaml")
    print(run("check", "rules", "rules.yaml", cwd=tmp_path))
    print(run("test", "rules", "rules.test.yaml", cwd=tmp_path))


def test_every_alert_has_a_runbook_and_a_unit_test() -> None:
    alerts = [rule for group in rule_groups()["groups"] for rule in group["rules"]]
    assert alerts
    for alert in alerts:
        assert alert["annotations"]["runbook"], alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
    tests = yaml.safe_load((MONITORING / "rules.test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]
              if case["exp_alerts"]}  # fmt: skip
    assert tested == {alert["alert"] for alert in alerts}


def served() -> set[str]:
    """Every sample name the receiver, the poller and the worker expose."""
    names: set[str] = set()
    registries: list[CollectorRegistry] = [
        ReceiverMetrics().registry, PollerMetrics().registry, WorkerMetrics().registry,
        ReconcilerMetrics().registry,
    ]  # fmt: skip
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    panels = dashboard["panels"]
    assert [p["title"].split(":")[0] for p in panels if p["type"] == "row"] == [
        "Receiver", "Poller", "Worker", "Reconciliation", "Release",
    ]  # fmt: skip
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def test_every_metric_queried_is_served() -> None:
    rules = [rule["expr"] for group in rule_groups()["groups"] for rule in group["rules"]]
    queried = {name for expr in rules + dashboard_queries() for name in METRIC.findall(expr)}
    assert len(queried) > 20
    assert queried - served() == set()


def test_a_component_that_vanishes_or_cannot_be_scraped_alerts() -> None:
    """Each component has an alert for the absence of a series only it serves, one alert
    fires on a target down (up == 0), one on two releases running, and the dashboard shows
    the releases that run (nxcloud_build_info)."""
    exprs = {rule["alert"]: rule["expr"] for group in rule_groups()["groups"]
             for rule in group["rules"]}  # fmt: skip
    metrics = (ReceiverMetrics(), PollerMetrics(), WorkerMetrics(), ReconcilerMetrics())
    serving = [{family.name for family in m.registry.collect()} - {"nxcloud_build_info"}
               for m in metrics]  # fmt: skip
    for own in serving:
        only = own - set().union(*(other for other in serving if other is not own))
        absent = [alert for alert, expr in exprs.items()
                  if "absent(" in expr and set(METRIC.findall(expr)) & only]  # fmt: skip
        assert len(absent) == 1, own
    assert [a for a, expr in exprs.items() if re.search(r"\bup\{[^}]*\} == 0", expr)]
    assert [a for a, expr in exprs.items() if "count by (namespace, version)" in expr]
    assert any("nxcloud_build_info" in query for query in dashboard_queries())
