"""`nxcloud-connector check`: each dependency tried for real, a line per check, and what is
wrong named: an unreachable Kafka, a refused login, a missing topic, a missing ACL, a schema
not registered, refused NXCloud credentials, push-port TLS files that do not load or expire."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from connector import acls, admin, groups, registry
from connector.check import (
    Checked,
    grant_verdict,
    nxcloud,
    passed,
    push_tls,
    run,
    schema_registry,
    topic_verdict,
)
from connector.clock import utcnow
from connector.local import sandbox
from connector.local.broker import free_port
from connector.local.certs import Authority
from connector.settings import Secret, Settings
from connector.topics import ExistingTopic, TopicNames, TopicSpec, declare
from tests.kafka_helpers import serving
from tests.secure_helpers import SecureKafka

SPEC = TopicSpec("t", 3, 1, {"cleanup.policy": "delete"})
EVERYTHING = frozenset(acls.OPERATIONS)


def verdicts(results: list[Checked]) -> dict[str, str]:
    return {result.what: result.verdict for result in results}


def failing(results: list[Checked]) -> list[str]:
    return [str(result) for result in results if result.verdict == "FAIL"]


def test_a_topic_is_judged_by_what_this_user_may_see() -> None:
    hidden = topic_verdict(SPEC, acls.Access(None, frozenset()), None)
    assert hidden.verdict == "FAIL"
    assert "may not even Describe" in hidden.detail
    missing = topic_verdict(SPEC, acls.Access(False, EVERYTHING), None)
    assert missing.verdict == "FAIL"
    assert "nxcloud-connector topics" in missing.detail
    narrow = topic_verdict(SPEC, acls.Access(True, frozenset({"Describe"}), 2), None)
    assert (narrow.verdict, narrow.detail) == ("FAIL", "2 partitions, declared 3")
    unread = topic_verdict(SPEC, acls.Access(True, frozenset({"Describe"}), 3), None)
    assert unread.verdict == "ok"
    assert "configs not read" in unread.detail
    drifted = ExistingTopic("t", 3, 1, {"cleanup.policy": "compact"})
    judged = topic_verdict(SPEC, acls.Access(True, EVERYTHING, 3), drifted)
    assert judged.verdict == "FAIL"
    assert "cleanup.policy is compact, declared delete" in judged.detail
    same = topic_verdict(SPEC, acls.Access(True, EVERYTHING, 3), ExistingTopic("t", 3, 1, {
        "cleanup.policy": "delete"}))  # fmt: skip
    assert same.verdict == "ok"


def test_a_grant_names_what_is_lacking_and_who_lacks_it() -> None:
    grant = acls.Grant("topic", "t", ("Write", "Describe"))
    lacking = grant_verdict(grant, acls.Access(True, frozenset({"Describe"})), "user 'w'")
    assert lacking.verdict == "FAIL"
    assert lacking.detail.startswith("user 'w' may not Write: grant it")
    assert grant_verdict(grant, acls.Access(True, EVERYTHING), "u").verdict == "ok"
    unknown = grant_verdict(grant, acls.Access(True, None), "u")
    assert unknown.verdict == "skip"
    assert passed([unknown, grant_verdict(grant, acls.Access(True, EVERYTHING), "u")])
    assert not passed([lacking])


async def test_on_a_plain_broker_a_missing_topic_is_named_then_everything_passes(
    settings: Settings,
) -> None:
    ours = dataclasses.replace(settings, topic_suffix=uuid.uuid4().hex[:10])
    names = TopicNames.of(ours)
    before = await run(ours, "worker", utcnow())
    assert verdicts(before)["Kafka reachable"] == "ok"
    assert verdicts(before)["Kafka login"] == "ok"
    assert sorted(failing(before)) == sorted(
        f"FAIL  topic {name}: missing: create it with `nxcloud-connector topics` (the operator)"
        for name in (names.dr_raw, names.cdr_raw, names.observations, names.call_events,
                     names.dead_letter)
    )  # fmt: skip
    await admin.converge(ours, declare(ours, names))
    after = await run(ours, "all", utcnow())
    assert passed(after), failing(after)
    assert verdicts(after)[f"topic {names.poller_state}"] == "ok"
    assert verdicts(after)[f"ACL group {groups.worker(ours)}"] == "ok"


def test_the_command_prints_a_line_each_and_exits_8_on_a_failure(settings: Settings) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "NXCLOUD_TOPIC_SUFFIX": uuid.uuid4().hex[:10]}  # fmt: skip
    missing = subprocess.run(
        [sys.executable, "-m", "connector", "check", "--component", "receiver"], env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode == 8, missing.stdout + missing.stderr
    lines = missing.stdout.splitlines()
    assert lines[0] == f"ok    Kafka reachable: {settings.kafka_bootstrap_servers}"
    assert any(line.startswith("FAIL  topic nxcloud.voice.dr.raw.") for line in lines)
    assert lines[-1].startswith("skip  push port TLS: plain HTTP")
    nobody = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    down = subprocess.run(
        [sys.executable, "-m", "connector", "check"], env=nobody,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert down.returncode == 8
    assert down.stdout.splitlines()[0].startswith("FAIL  Kafka reachable: 127.0.0.1:")
    assert "Connection refused" in down.stdout.splitlines()[0]


async def test_on_the_secured_broker_each_users_grants_are_checked(
    secure_kafka: SecureKafka,
) -> None:
    worker = await run(secure_kafka.settings("worker"), "worker", utcnow())
    assert passed(worker), failing(worker)
    assert verdicts(worker)["Kafka login"] == "ok"
    reconciler = await run(secure_kafka.settings("reconciler"), "reconciler", utcnow())
    assert passed(reconciler), failing(reconciler)
    assert verdicts(reconciler)[f"topic {secure_kafka.names.reconciliation}"] == "ok"
    partial = await run(secure_kafka.settings("partial"), "worker", utcnow())
    events = secure_kafka.names.call_events
    assert failing(partial) == [
        f"FAIL  ACL topic {events}: user 'partial' may not Write: grant it "
        "(connector/acls.py, deploy/base/users.yaml)"
    ]
    stranger = await run(secure_kafka.settings("stranger"), "receiver", utcnow())
    assert f"FAIL  topic {secure_kafka.names.dr_raw}: this user may not even Describe it" in (
        "\n".join(failing(stranger)))  # fmt: skip
    assert "FAIL  ACL group" not in "\n".join(failing(stranger))  # the receiver has no group
    wrong = secure_kafka.settings("worker", kafka_sasl_password=Secret("not-the-password"))
    refused = await run(wrong, "worker", utcnow())
    assert verdicts(refused)["Kafka login"] == "FAIL"
    assert "not-the-password" not in "\n".join(map(str, refused))
    assert len(refused) == 3  # reachable, the refused login, the registry: nothing after


async def test_a_subject_without_this_releases_schema_is_named(
    schema_registry: str, kafka_bootstrap: str
) -> None:
    settings = Settings(registry_url=schema_registry, topic_suffix=uuid.uuid4().hex[:10])
    before = await schema_registry_check(settings)
    assert before.verdict == "FAIL"
    assert "run `nxcloud-connector registry`" in before.detail
    await registry.register_all(settings, TopicNames.of(settings))
    after = await schema_registry_check(settings)
    assert after.verdict == "ok", after
    assert after.detail.count(" id ") == 5


async def schema_registry_check(settings: Settings) -> Checked:
    return await schema_registry(settings, TopicNames.of(settings))


async def test_nxcloud_credentials_are_tried_with_one_request() -> None:
    world = sandbox.World(seed=3, origin=utcnow() - timedelta(minutes=5), rate=1.0)
    stand_in = sandbox.Sandbox(world, appkey="the-key", secretkey="the-secret")
    async with serving(sandbox.create_app(stand_in)) as url:
        cdr_url = f"{url}/api/voiceSms/getVoiceCdr"
        right = Settings(nxcloud_appkey=Secret("the-key"), nxcloud_secretkey=Secret("the-secret"),
                         nxcloud_cdr_url=cdr_url)  # fmt: skip
        accepted = await nxcloud(right, utcnow())
        assert (accepted.verdict, accepted.detail) == ("ok", f"{cdr_url} accepts the credentials")
        wrong = dataclasses.replace(right, nxcloud_secretkey=Secret("a-wrong-secret"))
        refused = await nxcloud(wrong, utcnow())
        assert refused.verdict == "FAIL"
        assert "refused the credentials" in refused.detail
        assert "NXCLOUD_SECRETKEY" in refused.detail
        assert "a-wrong-secret" not in str(refused)
    down = await nxcloud(
        dataclasses.replace(right, nxcloud_cdr_url=f"http://127.0.0.1:{free_port()}/"), utcnow()
    )
    assert down.verdict == "FAIL"
    assert "NXCLOUD_CDR_URL" in down.detail
    assert (await nxcloud(Settings(), utcnow())).verdict == "skip"


def test_the_push_ports_tls_files_load_and_are_not_about_to_expire(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "ca")
    issued = authority.issue("push", "receiver", ("127.0.0.1",))
    other = authority.issue("other", "receiver", ("127.0.0.1",))
    settings = Settings(receiver_tls_cert_file=issued.cert, receiver_tls_key_file=issued.key)
    now = utcnow()
    fine = push_tls(settings, now)
    assert fine.verdict == "ok"
    assert "valid until" in fine.detail
    assert push_tls(settings, now + timedelta(days=820)).detail.endswith("renew it")
    expired = push_tls(settings, now + timedelta(days=900))
    assert (expired.verdict, "expired at" in expired.detail) == ("FAIL", True)
    mismatched = Settings(receiver_tls_cert_file=issued.cert, receiver_tls_key_file=other.key)
    wrong = push_tls(mismatched, now)
    assert wrong.verdict == "FAIL"
    assert "NXCLOUD_RECEIVER_TLS_KEY_FILE" in wrong.detail
    assert push_tls(Settings(), now).verdict == "skip"


@pytest.mark.parametrize("component", ["receiver", "poller", "worker", "operator"])
def test_each_components_topics_are_those_its_grants_name(component: str) -> None:
    from connector.check import topics_of

    settings = Settings()
    names = TopicNames.of(settings)
    granted = {g.name for g in acls.grants(settings, names)[component] if g.resource == "topic"}
    checked = {spec.name for spec in topics_of(settings, component, names)}
    assert checked
    assert checked <= granted | {spec.name for spec in declare(settings, names)}
    if component != "operator":
        assert checked == {name for name in granted if name in checked}
