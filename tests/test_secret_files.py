"""Every secret setting also from a file (`…_FILE`), read again when it is rotated."""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
from aiokafka.conn import AIOKafkaConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connector import clients, login
from connector.errors import ConfigError
from connector.registry import Registry
from connector.settings import REREAD_SECONDS, Secret, Settings
from tests.kafka_helpers import serving

SECRET_VARIABLES = (
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_KEY_PASSWORD",
    "NXCLOUD_APPKEY",
    "NXCLOUD_SECRETKEY",
    "NXCLOUD_RECEIVER_TOKEN",
)


def rotate(path: Path, value: str) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text(value)
    os.replace(fresh, path)


def later(seconds: float = REREAD_SECONDS) -> None:
    """Wait out the re-read interval (a condition on the clock itself, not a stand-in)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(0.05)


def test_every_secret_setting_can_come_from_a_file(tmp_path: Path) -> None:
    secret_names = {f.metadata["env"] for f in fields(Settings) if f.metadata["secret"]}
    assert set(SECRET_VARIABLES) <= secret_names
    (tmp_path / "appkey").write_text("the-appkey\n")
    settings = Settings.from_env({"NXCLOUD_APPKEY_FILE": str(tmp_path / "appkey")})
    assert settings.nxcloud_appkey is not None
    assert settings.nxcloud_appkey.reveal() == "the-appkey"
    assert settings.nxcloud_appkey.path == tmp_path / "appkey"
    assert "the-appkey" not in repr(settings)


def test_a_secret_file_is_read_again_once_rotated(tmp_path: Path) -> None:
    path = tmp_path / "password"
    rotate(path, "first")
    secret = Secret.from_file(path)
    rotate(path, "second\n")
    later()
    assert secret.reveal() == "second"
    path.unlink()  # between two steps of a rotation: the last value stands
    later()
    assert secret.reveal() == "second"


async def test_every_login_sends_the_password_as_its_file_holds_then(tmp_path: Path) -> None:
    path = tmp_path / "password"
    rotate(path, "first")
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
         "KAFKA_SASL_USERNAME": "receiver", "KAFKA_SASL_PASSWORD_FILE": str(path)}
    )  # fmt: skip
    given = clients.security(settings)["sasl_plain_password"]  # once, when a client is built
    assert given == login.MASK
    assert "first" not in repr(given)
    connection = AIOKafkaConnection("127.0.0.1", 9092, **clients.security(settings))
    assert connection.authenticator_scram()._sasl_plain_password == b"first"
    rotate(path, "second")
    later()
    assert connection.authenticator_scram()._sasl_plain_password == b"second"
    plain = replace(settings, kafka_sasl_mechanism="PLAIN")
    connection = AIOKafkaConnection("127.0.0.1", 9092, **clients.security(plain))
    assert connection.authenticator_plain()._sasl_plain_password == "second"
    credentials = clients.broker_credentials(settings)
    assert login.current(getattr(credentials, "password", None)) == "second"


def test_the_tls_files_stamp_changes_with_a_rotated_certificate(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    rotate(path, "first")
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": str(path)})
    before = clients.tls_files(settings).stamp()
    assert clients.tls_files(settings).stamp() == before
    rotate(path, "second")
    assert clients.tls_files(settings).stamp() != before
    assert "second" not in repr(clients.tls_files(settings).stamp())


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"NXCLOUD_SECRETKEY": "x", "NXCLOUD_SECRETKEY_FILE": "{dir}/s"},
         "NXCLOUD_SECRETKEY and NXCLOUD_SECRETKEY_FILE: give one, not both"),
        ({"NXCLOUD_RECEIVER_TOKEN_FILE": "{dir}/missing"},
         "NXCLOUD_RECEIVER_TOKEN_FILE: cannot read a secret from {dir}/missing"),
        ({"NXCLOUD_APPKEY_FILE": "{dir}/empty"},
         "NXCLOUD_APPKEY_FILE: cannot read a secret from {dir}/empty"),
    ],
)  # fmt: skip
def test_a_bad_secret_file_fails_at_start_naming_the_variable(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    (tmp_path / "s").write_text("in-the-file")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({k: v.format(dir=tmp_path) for k, v in env.items()})
    assert problem.format(dir=tmp_path) in str(caught.value)
    assert "in-the-file" not in str(caught.value)


def test_a_secret_from_a_file_meets_the_same_rules_as_one_given_directly(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("has a space inside\n")
    with pytest.raises(ConfigError, match="NXCLOUD_RECEIVER_TOKEN_FILE: must be 1 to 256"):
        Settings.from_env({"NXCLOUD_RECEIVER_TOKEN_FILE": str(token)})
    token.write_text("TOK+ORCHID/4f19=a2\n")
    settings = Settings.from_env({"NXCLOUD_RECEIVER_TOKEN_FILE": str(token)})
    assert settings.receiver_token is not None
    assert settings.receiver_token.reveal() == "TOK+ORCHID/4f19=a2"


@pytest.mark.parametrize("how", ["emptied", "unreadable", "deleted"])
def test_a_token_file_that_cannot_be_read_is_logged_once_and_the_last_token_stays(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connector.settings")
    path = tmp_path / "token"
    path.write_text("first-token")
    settings = Settings.from_env({"NXCLOUD_RECEIVER_TOKEN_FILE": str(path)})
    token = settings.receiver_token
    assert token is not None
    if how == "emptied":
        rotate(path, "\n")
    elif how == "unreadable":  # (as root, a mode cannot stop a read: a directory does)
        path.unlink()
        path.mkdir()
    else:
        path.unlink()
    seen = []
    for _ in range(3):
        later()
        seen.append(token.reveal())
    assert seen == ["first-token"] * 3
    told = [r for r in caplog.records if r.getMessage().startswith("secret file cannot be read")]
    assert len(told) == 1
    assert told[0].__dict__["variable"] == "NXCLOUD_RECEIVER_TOKEN_FILE"
    assert told[0].__dict__["reason"] in {"empty", "missing", "unreadable (Is a directory)"}
    assert "first-token" not in caplog.text

    if path.is_dir():
        path.rmdir()
    rotate(path, "second-token")
    later()
    assert token.reveal() == "second-token"
    assert [r.getMessage() for r in caplog.records].count("secret file read again") == 1


async def test_the_registry_client_sends_a_rotated_password_at_its_next_request(
    tmp_path: Path,
) -> None:
    """One registry client (as `registry` keeps for all its registrations) over real HTTP:
    the request after the password file changed carries the new password."""
    seen: list[str] = []

    async def lookup(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization", ""))
        return JSONResponse({"id": 7, "version": 1, "subject": "s"})

    path = tmp_path / "password"
    rotate(path, "registry-password-1")
    app = Starlette(routes=[Route("/subjects/{name}", lookup, methods=["POST"])])
    async with serving(app) as url:
        settings = Settings.from_env({"NXCLOUD_REGISTRY_URL": url,
                                      "NXCLOUD_REGISTRY_USERNAME": "nxcloud-worker",
                                      "NXCLOUD_REGISTRY_PASSWORD_FILE": str(path)})  # fmt: skip
        async with Registry(settings) as client:
            await client.lookup("s", "{}")
            rotate(path, "registry-password-2")
            later()
            await client.lookup("s", "{}")
    basic = [base64.b64decode(header.removeprefix("Basic ")).decode() for header in seen]
    assert basic == ["nxcloud-worker:registry-password-1", "nxcloud-worker:registry-password-2"]
