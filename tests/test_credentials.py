"""Credentials that change while the connector runs: SCRAM passwords from mounted files, and
OAUTHBEARER tokens from an OIDC provider the test serves (Kafka's own OIDC validator checks
them against its JWKS). On a secured broker of this module's own that disconnects clients
after a few seconds (`connections.max.reauth.ms`), so every client must log in again, with
whatever its file or its token endpoint gives by then."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, for_code
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from connector import admin, clients
from connector.clock import utcnow
from connector.local import sandbox
from connector.local.broker import free_port
from connector.poller.loop import Poller
from connector.receiver.app import create_app
from connector.settings import Settings
from tests.kafka_helpers import read_topic, serving
from tests.oidc_helpers import Client, Issuer
from tests.process_helpers import sandbox_poller_env
from tests.secure_helpers import SecureKafka, started_secure_kafka
from tests.support import ZONE, sandboxed_poller
from tests.worker_helpers import await_ready, dr_record, start_worker

pytestmark = pytest.mark.kafka  # a broker of its own (`reauthenticating`)

DR_PATH = "/nxcloud/voice/dr"
SCRAM_SHA_512 = 2  # org.apache.kafka.clients.admin.ScramMechanism
ITERATIONS = 4096


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(self, user: str, password: str) -> None:
        salt = secrets.token_bytes(32)
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
        self._upsertion: tuple[Any, ...] = (user, SCRAM_SHA_512, ITERATIONS, salt, salted, {})

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        return request_struct_class([], [self._upsertion], {})


async def change_password(administrator: Settings, user: str, password: str) -> None:
    """What Strimzi's User Operator does when it rotates a KafkaUser's password."""
    async with admin.admin_client(administrator) as client:
        response = await client._send_request(AlterUserScramCredentialsRequest(user, password))
    for _user, code, message, _tags in response.results:
        assert not code, f"{for_code(code).__name__}: {message}"


SECRETS = {user: secrets.token_urlsafe(18) for user in ("receiver", "worker", "foreign")}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    clients = {user: Client(secret, user) for user, secret in SECRETS.items()}
    clients["foreign"] = Client(SECRETS["foreign"], "receiver", audience="another-cluster")
    # Signed with the key the brokers trust, for a user they know, yet refused: issued by
    # another issuer; expired 300 s ago (the issuer's clock 6 minutes behind), well past the
    # brokers' allowance for clock skew (sasl.oauthbearer.clock.skew.seconds, 30 s).
    clients["misissued"] = Client(SECRETS["foreign"], "receiver", issuer="https://elsewhere")
    clients["expired"] = Client(SECRETS["foreign"], "receiver", lifetime=60, behind=360)
    with Issuer(clients) as serving_tokens:
        yield serving_tokens


@pytest.fixture(scope="module")
def reauthenticating(
    tmp_path_factory: pytest.TempPathFactory, issuer: Issuer
) -> Iterator[SecureKafka]:
    data = tmp_path_factory.mktemp("rotating-kafka")
    oauth = free_port()
    with started_secure_kafka(data, reauth_ms=3000, oauth_port=oauth, issuer=issuer.url) as secure:
        yield secure


def oauth_env(secure: SecureKafka, client: str, secret: str | None = None) -> dict[str, str]:
    """`client`'s settings on the OAUTHBEARER listener, on this module's topics."""
    scram = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
    env = {key: value for key, value in secure.env("worker").items() if key not in scram}
    return {**env, **secure.security.oauth_env(client, secret or SECRETS[client])}


def mount(path: Path, value: str) -> None:
    """As the kubelet updates a mounted Secret: the new file replaces the old one at once."""
    fresh = path.with_suffix(".new")
    fresh.write_text(value + "\n")
    os.replace(fresh, path)


def password_file_env(secure: SecureKafka, user: str, path: Path) -> dict[str, str]:
    """`user`'s settings with its SCRAM password from the mounted file at `path`."""
    mount(path, secure.security.passwords()[user])
    env = {key: value for key, value in secure.env(user).items() if key != "KAFKA_SASL_PASSWORD"}
    return {**env, "KAFKA_SASL_PASSWORD_FILE": str(path)}


async def metrics(http: httpx.AsyncClient, receiver: str) -> str:
    return (await http.get(receiver + "/metrics")).text


def message_ids(values: list[Any]) -> set[str]:
    return {str(value["fields"].get("messageid")) for value in values}


async def test_a_rotated_scram_password_is_taken_from_the_mounted_file_without_a_restart(
    reauthenticating: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secure = reauthenticating
    caplog.set_level(logging.INFO, logger="connector")
    password_file = tmp_path / "password"
    receiving = Settings.from_env({**password_file_env(secure, "receiver", password_file),
                                   "NXCLOUD_SPOOL_DIR": str(tmp_path / "spool")})  # fmt: skip
    world = sandbox.World(seed=31, origin=utcnow(), rate=1.0)
    answered: set[str] = set()

    async with (
        serving(create_app(receiving, secure.names)) as receiver,
        httpx.AsyncClient(timeout=30) as http,
    ):

        async def push(message: int) -> None:
            call = world.calls(message)[0]
            pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
            assert pushed.status_code == 200
            if "success" in pushed.text:
                answered.add(str(call.messageid))

        assert (await http.get(receiver + "/readyz")).text == "ready"
        for message in range(5):
            await push(message)
        new = "rotated-" + secrets.token_urlsafe(18)
        await change_password(secure.settings("admin"), "receiver", new)
        mount(password_file, new)
        # Pushes go on while the broker disconnects the old sessions and the receiver logs in
        # again: with the old password (refused), then with the file's.
        loop = asyncio.get_running_loop()
        message, until = 5, loop.time() + 15
        while loop.time() < until:
            await push(message)
            message += 1
            await asyncio.sleep(0.1)
        operator = secure.settings("operator")
        await read_topic(operator, secure.names.dr_raw,
                         lambda values: answered <= message_ids(values), deadline=90)  # fmt: skip
        deadline = loop.time() + 30
        while "nxcloud_receiver_kafka_up 1.0" not in await metrics(http, receiver):
            assert loop.time() < deadline, "the receiver did not go straight to Kafka again"
            await asyncio.sleep(0.2)
        for last in range(message, message + 5):
            await push(last)
        assert "nxcloud_receiver_spool_depth 0.0" in await metrics(http, receiver)
        ready = await http.get(receiver + "/readyz")
    assert ready.text == "ready"
    assert len(answered) == message + 5
    stored = await read_topic(
        operator, secure.names.dr_raw, lambda values: answered <= message_ids(values)
    )
    assert answered <= message_ids(stored)
    # Its producer logged in again with the file's password by itself (connector/login.py):
    # the receiver rebuilds it only for rotated TLS files.
    line = "kafka credentials changed, reconnecting with them"
    assert not [record for record in caplog.records if record.getMessage() == line]
    assert new not in caplog.text


async def ready_text(http: httpx.AsyncClient, receiver: str, wanted: str) -> str:
    """/readyz once it starts with `wanted`, or as it is after 60 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    text = (await http.get(receiver + "/readyz")).text
    while not text.startswith(wanted) and loop.time() < deadline:
        await asyncio.sleep(0.2)
        text = (await http.get(receiver + "/readyz")).text
    return text


async def test_oauthbearer_a_pushed_dr_becomes_a_call_event_through_the_worker(
    reauthenticating: SecureKafka, issuer: Issuer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    secure = reauthenticating
    caplog.set_level(logging.DEBUG)
    for name in ("aiokafka", "connector", "httpx", "httpcore", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    receiving = Settings.from_env(
        {**oauth_env(secure, "receiver"), "NXCLOUD_SPOOL_DIR": str(tmp_path / "spool")}
    )
    worker = start_worker({**oauth_env(secure, "worker"), "NXCLOUD_LOG_LEVEL": "DEBUG"},
                          tmp_path / "worker")  # fmt: skip
    try:
        await asyncio.to_thread(await_ready, worker)
        call = sandbox.World(seed=41, origin=utcnow(), rate=1.0).calls(0)[0]
        async with (
            serving(create_app(receiving, secure.names)) as receiver,
            httpx.AsyncClient(timeout=30) as http,
        ):
            assert await ready_text(http, receiver, "ready") == "ready"
            pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
            assert "success" in pushed.text
            events = await read_topic(
                secure.settings("operator"), secure.names.call_events,
                lambda values: any(e["message_id"] == str(call.messageid) for e in values),
                deadline=120,
            )  # fmt: skip
            # Logged in again and again (the broker disconnects after 3 s): still ready.
            assert await ready_text(http, receiver, "ready") == "ready"
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
    assert any(e["message_id"] == str(call.messageid) for e in events)
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert issuer.issued
    for token in issuer.issued:
        signature = token.rsplit(".", 1)[-1]
        for text in (caplog.text, worker_log,
                     *(str(record.__dict__) for record in caplog.records)):  # fmt: skip
            assert signature not in text
    assert SECRETS["receiver"] not in caplog.text
    assert SECRETS["worker"] not in worker_log


async def test_a_token_refused_by_its_endpoint_or_by_kafka_is_one_line_and_not_ready(
    reauthenticating: SecureKafka, issuer: Issuer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    secure = reauthenticating
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG)
    refused = Settings.from_env({**oauth_env(secure, "receiver", "not-the-secret"),
                                 "NXCLOUD_SPOOL_DIR": str(tmp_path / "refused")})  # fmt: skip
    foreign = Settings.from_env({**oauth_env(secure, "foreign"),
                                 "NXCLOUD_SPOOL_DIR": str(tmp_path / "foreign")})  # fmt: skip
    call = sandbox.World(seed=43, origin=utcnow(), rate=1.0).calls(0)[0]
    answers = []
    for settings, wanted in (
        (refused, "not ready: the OAuth token endpoint refused client 'receiver' (HTTP 401)"),
        (foreign, "not ready: Kafka refused the OAUTHBEARER token of client 'foreign'"),
    ):
        async with (
            serving(create_app(settings, secure.names)) as receiver,
            httpx.AsyncClient(timeout=30) as http,
        ):
            pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
            assert "success" in pushed.text  # spooled
            answers.append(await ready_text(http, receiver, wanted))
    assert answers[0] == (
        "not ready: the OAuth token endpoint refused client 'receiver' (HTTP 401): check "
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL, KAFKA_SASL_OAUTHBEARER_CLIENT_ID and "
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"
    )
    assert answers[1] == (
        "not ready: Kafka refused the OAUTHBEARER token of client 'foreign' (expired, or not "
        "for these brokers): check KAFKA_SASL_OAUTHBEARER_AUDIENCE, KAFKA_SASL_OAUTHBEARER_SCOPE "
        "and the token endpoint's client"
    )
    lines = [r for r in caplog.records if r.getMessage().startswith("kafka refuses the receiver")]
    assert len(lines) == 2
    for token in issuer.issued:
        assert token.rsplit(".", 1)[-1] not in caplog.text
    assert "not-the-secret" not in caplog.text


async def rotate_while(
    secure: SecureKafka, user: str, path: Path, alive: Callable[[], bool]
) -> str:
    """Rotate `user`'s SCRAM password as Strimzi and the kubelet do: on the broker first, in
    the mounted file 5 s later (logins with the old one are refused meanwhile: the broker
    disconnects every session after 3 s); then 15 s for the client to log in again with the
    file's. `alive` must hold throughout."""
    new = "rotated-" + secrets.token_urlsafe(18)
    await change_password(secure.settings("admin"), user, new)
    loop = asyncio.get_running_loop()
    for step in (5, 15):
        if step == 15:
            mount(path, new)
        until = loop.time() + step
        while loop.time() < until:
            assert alive(), f"the {user} stopped after its password was rotated"
            await asyncio.sleep(0.2)
    return new


async def test_the_poller_logs_in_again_with_a_rotated_password_and_loses_no_row(
    reauthenticating: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secure = reauthenticating
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG)
    password_file = tmp_path / "password"
    world = sandbox.World(seed=47, origin=utcnow() - timedelta(seconds=40), rate=1.0,
                          max_seconds=2)  # fmt: skip
    stand_in = sandbox.Sandbox(world, cdr_delay=timedelta(seconds=1))
    operator = secure.settings("operator")

    def ids(values: list[Any]) -> set[int]:
        return {value["row"]["id"] for value in values}

    async with (
        serving(sandbox.create_app(stand_in)) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        settings = sandboxed_poller(
            Settings.from_env(password_file_env(secure, "poller", password_file)), url
        )
        stop = asyncio.Event()
        running = asyncio.create_task(Poller(settings, secure.names, http).run(stop))
        try:
            before = {call.cdr_id for call in world.calls_between(world.origin, utcnow())}
            await read_topic(operator, secure.names.cdr_raw, lambda v: before <= ids(v),
                             deadline=120)  # fmt: skip
            new = await rotate_while(secure, "poller", password_file, lambda: not running.done())
            rotated = len(caplog.records)
            rotated_at = utcnow()
            wanted = {call.cdr_id for call in world.calls_between(world.origin, rotated_at)}
            stored = await read_topic(operator, secure.names.cdr_raw,
                                      lambda v: wanted <= ids(v), deadline=120)  # fmt: skip
            assert not running.done()
        finally:
            stop.set()
            await running
    assert wanted <= ids(stored)
    assert len(wanted) > len(before)  # rows that came only after the rotation
    # Sessions from before the rotation ended within 3 s: rows since came with new logins.
    logins = [r for r in caplog.records[rotated:]
              if r.getMessage().startswith("Authenticated as poller")]  # fmt: skip
    assert logins
    assert new not in caplog.text
    assert secure.security.passwords()["poller"] not in caplog.text


async def test_the_worker_logs_in_again_with_a_rotated_password_and_loses_no_event(
    reauthenticating: SecureKafka, tmp_path: Path
) -> None:
    secure = reauthenticating
    password_file = tmp_path / "password"
    env = password_file_env(secure, "worker", password_file)
    worker = start_worker({**env, "NXCLOUD_LOG_LEVEL": "DEBUG"}, tmp_path / "worker")
    calls = [call for n in range(40) for call in
             sandbox.World(seed=53, origin=utcnow(), rate=1.0).calls(n)]  # fmt: skip
    operator = secure.settings("operator")
    producer = AIOKafkaProducer(**clients.options(operator, acks="all", enable_idempotence=True))

    async def send(batch: list[sandbox.Call], first: int) -> None:
        for number, call in enumerate(batch, first):
            key, value = dr_record(call, number)
            await producer.send_and_wait(secure.names.dr_raw, value, key=key)

    def events_of(batch: list[sandbox.Call]) -> Callable[[list[Any]], bool]:
        wanted = {str(call.messageid) for call in batch}
        return lambda values: wanted <= {event["message_id"] for event in values}

    try:
        await asyncio.to_thread(await_ready, worker)
        await producer.start()
        half = len(calls) // 2
        await send(calls[:half], 0)
        await read_topic(operator, secure.names.call_events, events_of(calls[:half]),
                         deadline=120)  # fmt: skip
        new = await rotate_while(secure, "worker", password_file, lambda: worker.poll() is None)
        # Every session from before the rotation has ended (3 s): these records are read
        # and their events written through logins with the file's new password.
        await send(calls[half:], half)
        events = await read_topic(operator, secure.names.call_events, events_of(calls),
                                  deadline=120)  # fmt: skip
        assert worker.poll() is None
    finally:
        await producer.stop()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
    assert events_of(calls)(events)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "kafka refuses the worker" not in log
    assert new not in log
    assert secure.security.passwords()["worker"] not in log


@pytest.mark.parametrize("client", ["expired", "misissued", "receiver"])
async def test_a_refused_token_fails_the_login_itself_and_an_accepted_one_logs_in(
    reauthenticating: SecureKafka, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka alone takes a refused token for a login (it does not answer the broker's
    error challenge) and fails at the first request; answered, the login itself fails."""
    caplog.set_level(logging.INFO, logger="aiokafka")
    settings = Settings.from_env(oauth_env(reauthenticating, client, SECRETS["foreign"]
                                           if client != "receiver" else None))  # fmt: skip
    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
    options = clients.security(settings)
    if client == "receiver":
        conn = await create_conn(host, int(port), **options)
        response = await conn.send(ApiVersionRequest())
        conn.close()
        assert response.error_code == 0
        assert "Authenticated via OAUTHBEARER" in caplog.text
        return
    with pytest.raises(SaslAuthenticationFailed, match="invalid_token"):
        await create_conn(host, int(port), **options)
    assert "Authenticated" not in caplog.text


@pytest.mark.parametrize("client", ["expired", "misissued"])
async def test_a_token_kafka_refuses_is_one_line_and_not_ready_with_no_token_logged(
    reauthenticating: SecureKafka, issuer: Issuer, client: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    secure = reauthenticating
    caplog.set_level(logging.DEBUG)
    for name in ("aiokafka", "connector", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    issued = len(issuer.issued)
    refused = Settings.from_env({**oauth_env(secure, client, SECRETS["foreign"]),
                                 "NXCLOUD_SPOOL_DIR": str(tmp_path / "spool")})  # fmt: skip
    wanted = f"not ready: Kafka refused the OAUTHBEARER token of client {client!r}"
    call = sandbox.World(seed=59, origin=utcnow(), rate=1.0).calls(0)[0]
    async with (
        serving(create_app(refused, secure.names)) as receiver,
        httpx.AsyncClient(timeout=30) as http,
    ):
        pushed = await http.post(receiver + DR_PATH, data=call.dr_fields(ZONE))
        assert "success" in pushed.text  # spooled
        answer = await ready_text(http, receiver, wanted)
        status = (await http.get(receiver + "/readyz")).status_code
    assert answer == (
        f"{wanted} (expired, or not for these brokers): check KAFKA_SASL_OAUTHBEARER_AUDIENCE, "
        "KAFKA_SASL_OAUTHBEARER_SCOPE and the token endpoint's client"
    )
    assert status == 503
    lines = [r for r in caplog.records if r.getMessage().startswith("kafka refuses the receiver")]
    assert len(lines) == 1
    tokens = issuer.issued[issued:]
    assert tokens  # the receiver had tokens; the brokers refused them
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text
            assert not any(part in str(record.__dict__) for record in caplog.records)
    assert SECRETS["foreign"] not in caplog.text


async def fresh_password(secure: SecureKafka, user: str, path: Path) -> dict[str, str]:
    """`user`'s settings with a password of its own (set on the broker, mounted at `path`):
    other tests here rotate the users' passwords."""
    password = "fresh-" + secrets.token_urlsafe(18)
    await change_password(secure.settings("admin"), user, password)
    env = password_file_env(secure, user, path)
    mount(path, password)
    return env


def started(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """`nxcloud-connector COMMAND` as a process of its own, its output in `log`."""
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-m", "connector", command], env=env,
                                stdout=output, stderr=subprocess.STDOUT, text=True)  # fmt: skip


async def answers(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


async def stopped(process: subprocess.Popen[str]) -> int:
    process.terminate()
    return await asyncio.to_thread(process.wait, 60)


async def test_a_poller_process_takes_rotated_keys_and_password_from_its_files(
    reauthenticating: SecureKafka, tmp_path: Path
) -> None:
    """The poller as a process, every secret from a mounted file, each rotated where it is
    checked first, then in its file. NXCloud's keys: the provider refuses the old ones until
    the files hold the new, and the poller's next request (a retry) sends them. Then the
    Kafka password: the broker refuses the old one for 5 s, and the next login sends the
    file's. No restart, no row lost."""
    secure = reauthenticating
    files = {name: tmp_path / name for name in ("appkey", "secretkey", "password")}
    mount(files["appkey"], "appkey-1")
    mount(files["secretkey"], "secretkey-1")
    world = sandbox.World(seed=61, origin=utcnow() - timedelta(seconds=40), rate=1.0,
                          max_seconds=2)  # fmt: skip
    provider = sandbox.Sandbox(world, appkey="appkey-1", secretkey="secretkey-1",
                               cdr_delay=timedelta(seconds=1))  # fmt: skip
    operator = secure.settings("operator")
    loop = asyncio.get_running_loop()

    async def rows_since(moment: datetime, phase: str) -> None:
        calls = world.calls_between(moment, moment + timedelta(seconds=6))
        wanted = {call.cdr_id for call in calls}
        assert wanted
        try:
            await read_topic(operator, secure.names.cdr_raw,
                             lambda values: wanted <= {v["row"]["id"] for v in values},
                             deadline=120)  # fmt: skip
        except AssertionError as exc:  # with what the poller said last
            said = (tmp_path / "poller.log").read_text().splitlines()[-30:]
            raise AssertionError(f"{phase}: {exc}\n" + "\n".join(said)) from None

    async with serving(sandbox.create_app(provider)) as url, httpx.AsyncClient() as http:
        kafka = await fresh_password(secure, "poller", files["password"])
        env = sandbox_poller_env(kafka, url, secure.env("poller")["NXCLOUD_ACCOUNT"])
        for name in ("appkey", "secretkey"):
            del env[f"NXCLOUD_{name.upper()}"]
            env[f"NXCLOUD_{name.upper()}_FILE"] = str(files[name])
        # A row the first look missed (its call not ended yet) comes with a look 30 s later.
        env["NXCLOUD_POLLER_REPOLL_AFTER_SECONDS"] = "30"
        env["NXCLOUD_POLLER_PAGE_SIZE"] = "100"  # a request a window: the rate limit is 1/s
        env["NXCLOUD_POLLER_CREDENTIALS_RETRY_SECONDS"] = "1"
        metrics = f"http://127.0.0.1:{env['NXCLOUD_POLLER_METRICS_PORT']}/metrics"
        poller = started("poller", env, tmp_path / "poller.log")
        try:
            await rows_since(utcnow(), "before the rotations")
            provider.appkey, provider.secretkey = "appkey-2", "secretkey-2"
            deadline = loop.time() + 60
            while not re.search(r"^nxcloud_poller_credential_failures_total [1-9]",
                                (await http.get(metrics)).text, re.M):  # fmt: skip
                assert loop.time() < deadline, "the provider's new keys refused nothing"
                assert poller.poll() is None, "the poller stopped"
                await asyncio.sleep(0.2)
            mount(files["appkey"], "appkey-2")
            mount(files["secretkey"], "secretkey-2")
            await rows_since(utcnow(), "after the keys' rotation")
            password = "rotated-" + secrets.token_urlsafe(18)
            await change_password(secure.settings("admin"), "poller", password)
            until = loop.time() + 5
            while loop.time() < until:
                assert poller.poll() is None, "the poller stopped at the rotation"
                await asyncio.sleep(0.2)
            mount(files["password"], password)
            await rows_since(utcnow(), "after the password's rotation")
            assert poller.poll() is None, "the poller stopped"
        finally:
            code = await stopped(poller)
    assert code == 0
    log = (tmp_path / "poller.log").read_text()
    assert "cdr query refused" in log
    for secret in ("appkey-1", "secretkey-1", "appkey-2", "secretkey-2", password):
        assert secret not in log


async def test_a_receiver_process_takes_a_rotated_token_and_password_from_its_files(
    reauthenticating: SecureKafka, tmp_path: Path
) -> None:
    """The receiver as a process, its push token and Kafka password from mounted files: the
    next push after the token file changes is checked against the new token, and the next
    Kafka login (the broker ends sessions after 3 s) sends the new password."""
    secure = reauthenticating
    token, password_file = tmp_path / "token", tmp_path / "password"
    mount(token, "push-token-1")
    port, management = free_port(), free_port()
    env = {**await fresh_password(secure, "receiver", password_file),
           "NXCLOUD_RECEIVER_TOKEN_FILE": str(token), "NXCLOUD_SPOOL_DIR": str(tmp_path / "spool"),
           "NXCLOUD_RECEIVER_HOST": "127.0.0.1", "NXCLOUD_RECEIVER_PORT": str(port),
           "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
           "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(management)}  # fmt: skip
    push_url, manage = f"http://127.0.0.1:{port}{DR_PATH}", f"http://127.0.0.1:{management}"
    world = sandbox.World(seed=67, origin=utcnow(), rate=1.0)
    answered: set[str] = set()
    receiver = started("receiver", env, tmp_path / "receiver.log")
    async with httpx.AsyncClient(timeout=30) as http:

        async def push(message: int, with_token: str) -> int:
            call = world.calls(message)[0]
            pushed = await http.post(f"{push_url}/{with_token}", data=call.dr_fields(ZONE))
            if pushed.text == "success":
                answered.add(str(call.messageid))
            return pushed.status_code

        try:
            deadline = asyncio.get_running_loop().time() + 60
            while not await answers(http, manage + "/healthz"):
                assert receiver.poll() is None, "the receiver exited"
                assert asyncio.get_running_loop().time() < deadline, "the receiver never listened"
                await asyncio.sleep(0.2)
            assert await ready_text(http, manage, "ready") == "ready"
            assert await push(0, "push-token-1") == 200
            password = "rotated-" + secrets.token_urlsafe(18)
            await change_password(secure.settings("admin"), "receiver", password)
            loop = asyncio.get_running_loop()
            message, until = 1, loop.time() + 5
            while loop.time() < until:  # the broker refuses the file's password: spooled
                assert await push(message, "push-token-1") == 200
                message += 1
                await asyncio.sleep(0.2)
            mount(token, "push-token-2")
            mount(password_file, password)
            deadline = loop.time() + 30
            while await push(message, "push-token-2") != 200:
                assert loop.time() < deadline, "the rotated token is still refused"
                await asyncio.sleep(0.2)
            message += 1
            assert await push(message, "push-token-1") == 403
            until = loop.time() + 10
            while loop.time() < until:  # logins with the new password, every 3 s
                message += 1
                assert await push(message, "push-token-2") == 200
                await asyncio.sleep(0.2)
            deadline = loop.time() + 60
            while "nxcloud_receiver_kafka_up 1.0" not in (await http.get(manage + "/metrics")).text:
                assert loop.time() < deadline, "the receiver did not reach Kafka again"
                await asyncio.sleep(0.5)
            assert receiver.poll() is None, "the receiver stopped"
        finally:
            code = await stopped(receiver)
    assert code in (0, -signal.SIGTERM)  # uvicorn raises the signal again once it has stopped
    operator = secure.settings("operator")
    stored = await read_topic(
        operator, secure.names.dr_raw, lambda values: answered <= message_ids(values), deadline=90
    )
    assert answered <= message_ids(stored)
    assert len(answered) == message  # every push but the one with the old token
    log = (tmp_path / "receiver.log").read_text()
    for secret in ("push-token-1", "push-token-2", password):
        assert secret not in log
