"""Against the secured local broker: SASL_SSL with SCRAM-SHA-512 and mutual TLS, ACLs
enforced, one least-privilege user per component (connector.acls, as in deploy/)."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from connector import admin, clients, replay, report
from connector.clock import utcnow
from connector.errors import KafkaAccessError
from connector.local import sandbox
from connector.local.certs import Authority
from connector.poller.loop import Poller, poll
from connector.receiver.app import create_app
from connector.reconciler.loop import Reconciler
from connector.reconciler.store import MemoryStore
from connector.settings import Secret, Settings
from connector.tail import matcher, tail
from connector.topics import declare
from connector.worker.agents import EXIT_REFUSED
from tests.kafka_helpers import read_topic, serving
from tests.secure_helpers import SecureKafka
from tests.support import ZONE
from tests.worker_helpers import await_ready, dr_record, start_worker

DR_PATH = "/nxcloud/voice/dr"


@pytest.fixture
def worker(secure_kafka: SecureKafka, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = start_worker(secure_kafka.env("worker"), tmp_path / "worker")
    try:
        await_ready(process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def has_both_sources(message_id: str) -> Any:
    def merged(events: list[dict[str, Any]]) -> bool:
        return any(e["message_id"] == message_id and e["sources"] == ["cdr", "dr"] for e in events)

    return merged


async def test_a_pushed_dr_and_its_polled_cdr_become_call_events_one_user_each(
    secure_kafka: SecureKafka, worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    world = sandbox.World(seed=13, origin=utcnow() - timedelta(seconds=40), rate=1.0,
                          max_seconds=2)  # fmt: skip
    call = world.calls(0)[0]
    names = secure_kafka.names
    receiving = secure_kafka.settings("receiver", spool_dir=tmp_path / "spool")
    async with (
        serving(sandbox.create_app(sandbox.Sandbox(world, cdr_delay=timedelta(seconds=1)))) as nx,
        serving(create_app(receiving, names)) as receiver,
        httpx.AsyncClient(timeout=10) as http,
    ):
        polling = secure_kafka.settings(
            "poller", nxcloud_appkey=Secret("sandbox"), nxcloud_secretkey=Secret("sandbox"),
            nxcloud_cdr_url=nx + "/api/voiceSms/getVoiceCdr", poller_window_seconds=10,
            poller_settle_seconds=4, poller_first_lookback_seconds=60,
            poller_repoll_after_seconds=(30,),
        )  # fmt: skip
        assert (await http.get(receiver + "/readyz")).text == "ready"
        pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
        assert pushed.status_code == 200
        assert "success" in pushed.text
        stop = asyncio.Event()
        poller = asyncio.create_task(Poller(polling, names, http).run(stop))
        try:
            operator = secure_kafka.settings("operator")
            events = await read_topic(
                operator, names.call_events, has_both_sources(str(call.messageid)), deadline=120
            )
        finally:
            stop.set()
            await poller
    assert all(e["call_id"] for e in events)

    # The operator's commands, with the operator's user.
    out = io.StringIO()
    printed = await tail(operator, names.call_events, from_beginning=True,
                         wanted=matcher(None, str(call.messageid)), out=out, limit=1)  # fmt: skip
    assert printed >= 1
    assert str(call.messageid) in out.getvalue()
    since = utcnow() - timedelta(hours=1)
    summary = await replay.replay(operator, source="dr", since=since, until=None,
                                  progress=replay.Progress(io.StringIO()), names=names,
                                  now=utcnow())  # fmt: skip
    assert summary.read >= 1
    redriven = await replay.redrive(operator, None, replay.Progress(io.StringIO()), names)
    assert redriven.read == redriven.observations + redriven.dead_letters
    applied = await admin.converge(operator, declare(operator, names), create=False)
    assert not applied.plan.create
    # The reconciler with its user; the operator reads what it wrote.
    halt = asyncio.Event()
    reconciler = Reconciler(secure_kafka.settings("reconciler"), names, MemoryStore(),
                            tick_seconds=0.5)  # fmt: skip
    reconciling = asyncio.create_task(reconciler.run(halt))
    try:
        written = await read_topic(
            operator,
            names.reconciliation,
            lambda records: any(r["calls"] for r in records),
            deadline=120,
        )
    finally:
        halt.set()
        await reconciling
    day = date.fromisoformat(written[-1]["day"])
    assert [r["calls"] for r in await report.records(operator, names.reconciliation, [day])]
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "[^Worker]: Ready" in worker_log
    for password in secure_kafka.security.passwords().values():
        assert password not in worker_log


async def test_mutual_tls_authenticates_with_the_client_certificate(
    secure_kafka: SecureKafka,
) -> None:
    operator = Settings.from_env(
        {**secure_kafka.security.mtls_env("operator"), "NXCLOUD_TOPIC_SUFFIX": "secure"}
    )
    assert await clients.diagnose(operator) is None
    names = secure_kafka.names
    reach = clients.options(operator, acks="all", enable_idempotence=True)
    async with AIOKafkaProducer(**reach) as producer:
        await producer.send_and_wait(names.call_events, b'{"call_id": "mtls"}', key=b"mtls")
    found = await read_topic(
        operator, names.call_events, lambda events: any(e["call_id"] == "mtls" for e in events)
    )
    assert found

    stranger = replace(operator, kafka_ssl_cert_file=secure_kafka.security.cert_file("stranger"),
                       kafka_ssl_key_file=secure_kafka.security.key_file("stranger"))  # fmt: skip
    with pytest.raises(KafkaAccessError) as denied:
        await admin.converge(stranger, declare(stranger, names), create=False)
    assert str(denied.value).startswith(
        "Kafka ACLs deny the user of KAFKA_SSL_CERT_FILE access to a topic (nxcloud.voice."
    )


async def test_a_wrong_password_is_one_line_naming_the_variables(
    secure_kafka: SecureKafka,
) -> None:
    wrong = secure_kafka.settings("operator", kafka_sasl_password=Secret("not-the-password"))
    with pytest.raises(KafkaAccessError) as caught:
        await admin.converge(wrong, declare(wrong, secure_kafka.names), create=False)
    message = str(caught.value)
    assert message == (
        "Kafka refused the SCRAM-SHA-512 login of user 'operator': "
        "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )
    assert "not-the-password" not in message


async def test_an_untrusted_ca_is_one_line_naming_the_variable(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    other = Authority(tmp_path / "other-ca")
    untrusting = secure_kafka.settings("operator", kafka_ssl_ca_file=other.cert_file)
    reason = await clients.diagnose(untrusting)
    assert reason is not None
    assert reason.startswith("TLS: the broker's certificate is not trusted")
    assert reason.endswith("check KAFKA_SSL_CA_FILE")
    assert "\n" not in reason


async def test_a_worker_denied_write_on_the_call_events_exits_with_one_line(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    names = secure_kafka.names
    operator = secure_kafka.settings("operator")
    call = sandbox.World(seed=17, origin=utcnow(), rate=1.0).calls(0)[0]
    key, value = dr_record(call, 1)
    async with AIOKafkaProducer(**clients.options(operator, acks="all")) as producer:
        await producer.send_and_wait(names.dr_raw, value, key=key)
    process = start_worker(secure_kafka.env("partial"), tmp_path / "partial")
    try:
        code = process.wait(180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = (tmp_path / "partial.log").read_text(errors="replace")
    assert code == EXIT_REFUSED, log[-3000:]
    line = (
        "kafka refuses the worker, exiting: Kafka ACLs deny user 'partial' access to a topic "
        f"({names.call_events}): grant it (connector/acls.py, deploy/)"
    )
    assert line in log, log[-3000:]
    assert "Traceback" not in log


async def test_a_refused_receiver_spools_and_says_why_it_is_not_ready(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    """A user without the receiver's ACLs: pushes are spooled, /readyz names the ACL."""
    names = secure_kafka.names
    stranger = secure_kafka.settings("stranger", spool_dir=tmp_path / "spool",
                                     receiver_kafka_timeout_ms=3000)  # fmt: skip
    call = sandbox.World(seed=5, origin=utcnow(), rate=1.0).calls(0)[0]
    async with (
        serving(create_app(stranger, names)) as receiver,
        httpx.AsyncClient(timeout=30) as http,
    ):
        pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
        assert pushed.status_code == 200
        assert "success" in pushed.text
        ready = await http.get(receiver + "/readyz")
        deadline = asyncio.get_running_loop().time() + 30
        while "ACLs deny" not in ready.text and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            ready = await http.get(receiver + "/readyz")
    assert ready.status_code == 503
    assert ready.text == (
        "not ready: Kafka ACLs deny user 'stranger' a cluster operation (an idempotent "
        "producer needs Write on its topics): grant it (connector/acls.py, deploy/)"
    )
    assert any((tmp_path / "spool").iterdir())


async def test_no_secret_in_any_log_line_error_or_metric_at_debug(
    secure_kafka: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    security = secure_kafka.security
    password = security.passwords()["receiver"]
    wrong = "wrong-" + password
    caplog.set_level(logging.DEBUG)
    for name in ("aiokafka", "connector", "faust", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    errors: list[str] = []
    right = secure_kafka.settings("receiver", spool_dir=tmp_path / "spool")
    refused = replace(right, kafka_sasl_password=Secret(wrong), spool_dir=tmp_path / "spool2")
    call = sandbox.World(seed=9, origin=utcnow(), rate=1.0).calls(0)[0]
    pages = []
    for settings in (right, refused):
        async with (
            serving(create_app(settings, secure_kafka.names)) as receiver,
            httpx.AsyncClient(timeout=30) as http,
        ):
            await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
            pages += [(await http.get(receiver + path)).text for path in ("/readyz", "/metrics")]
        try:
            await clients.check(settings)
        except KafkaAccessError as exc:
            errors.append(str(exc))
    assert errors  # the wrong password was refused
    every = [caplog.text, *errors, *pages, repr(right), repr(refused)]
    every += [str(record.__dict__) for record in caplog.records]
    for text in every:
        assert password not in text
        assert wrong not in text
    assert "not ready: Kafka refused" in pages[2]


async def test_a_poller_without_its_acls_stops_with_one_line(secure_kafka: SecureKafka) -> None:
    stranger = secure_kafka.settings(
        "stranger", nxcloud_appkey=Secret("a"), nxcloud_secretkey=Secret("b"),
        poller_metrics_port=0,
    )  # fmt: skip
    with pytest.raises(KafkaAccessError) as caught:
        await asyncio.wait_for(poll(stranger, secure_kafka.names), 60)
    assert str(caught.value) == (
        "Kafka ACLs deny user 'stranger' a cluster operation (an idempotent producer needs "
        "Write on its topics): grant it (connector/acls.py, deploy/)"
    )


async def test_a_receiver_without_write_on_dr_raw_is_not_ready_naming_the_acl(
    secure_kafka: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another component's user (the poller's: Write on cdr.raw, not on dr.raw) starts its
    idempotent producer fine; its first produce is refused, and that is a refusal."""
    names = secure_kafka.names
    borrowed = secure_kafka.settings("poller", spool_dir=tmp_path / "spool")
    caplog.set_level(logging.INFO, logger="connector")
    world = sandbox.World(seed=21, origin=utcnow(), rate=1.0)
    calls = world.calls(0)[:3]
    async with (
        serving(create_app(borrowed, names)) as receiver,
        httpx.AsyncClient(timeout=30) as http,
    ):
        assert (await http.get(receiver + "/readyz")).text == "ready"
        for call in calls:
            pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
            assert pushed.status_code == 200
            assert "success" in pushed.text
        deadline = asyncio.get_running_loop().time() + 20
        ready = await http.get(receiver + "/readyz")
        while ready.status_code != 503 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            ready = await http.get(receiver + "/readyz")
        later = await http.get(receiver + "/readyz")
    line = (
        f"Kafka ACLs deny user 'poller' access to a topic ({names.dr_raw}): "
        "grant it (connector/acls.py, deploy/)"
    )
    assert ready.status_code == 503
    assert ready.text == f"not ready: {line}"
    assert later.text == ready.text
    refusals = [r for r in caplog.records if r.getMessage().startswith("kafka refuses")]
    assert [getattr(r, "reason", None) for r in refusals] == [line]
    assert sum(1 for _ in (tmp_path / "spool").rglob("*") if _.is_file()) >= 1
