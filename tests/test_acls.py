"""The least-privilege grants (pure): what each component may do, and their wire form."""

from __future__ import annotations

from connector import acls
from connector.settings import Settings
from connector.topics import TopicNames, declare


def operations(granted: tuple[acls.Grant, ...], resource: str, name: str) -> set[str]:
    return {op for g in granted if (g.resource, g.name) == (resource, name) for op in g.operations}


def test_each_component_gets_only_what_it_uses() -> None:
    settings = Settings(topic_suffix="t1", account="acme")
    names = TopicNames.of(settings)
    granted = acls.grants(settings)
    assert set(granted) == set(acls.COMPONENTS)
    receiver = granted["receiver"]
    assert {g.name for g in receiver} == {names.dr_raw, names.dead_letter}
    assert all(set(g.operations) == {"Write", "Describe"} for g in receiver)
    poller = granted["poller"]
    assert operations(poller, "group", "nxcloud-poller.acme") == {"Read", "Describe"}
    assert operations(poller, "topic", names.cdr_raw) == {"Write", "Describe"}
    assert "Read" not in operations(poller, "topic", names.cdr_raw)
    worker = granted["worker"]
    assert operations(worker, "topic", names.dr_raw) == {"Read", "Describe"}
    assert operations(worker, "topic", names.call_events) == {"Write", "Describe"}
    assert operations(worker, "group", "nxcloud-worker.t1") == {"Read", "Describe"}
    (own,) = [g for g in worker if g.pattern == "prefix"]
    assert own.name == "nxcloud-worker.t1-"  # the changelog and the leader-assignor topic
    assert "nxcloud-worker.t1-calls-changelog".startswith(own.name)
    assert "nxcloud-worker.t1-__assignor-__leader".startswith(own.name)
    for component in granted.values():
        assert not [g for g in component if g.resource == "cluster"]
        assert not [g for g in component if "All" in g.operations]
    reconciler = granted["reconciler"]
    assert operations(reconciler, "topic", names.call_events) == {"Read", "Describe"}
    assert operations(reconciler, "topic", names.poller_state) == {"Read", "Describe"}
    assert operations(reconciler, "topic", names.reconciliation) == {"Read", "Write", "Describe"}
    assert operations(reconciler, "group", "nxcloud-reconciler.t1") == {"Read", "Describe"}
    assert len(reconciler) == 4
    declared = {spec.name for spec in declare(settings)}
    operator = granted["operator"]
    assert {g.name for g in operator if g.resource == "topic" and g.pattern == "literal"} == (
        declared
    )


def test_grants_become_one_create_acl_per_operation() -> None:
    grant = acls.Grant("topic", "t", ("Read", "Write"), "prefix")
    assert acls.creations("worker", [grant]) == [
        (2, "t", 4, "User:worker", "*", 3, 3),
        (2, "t", 4, "User:worker", "*", 4, 3),
    ]
