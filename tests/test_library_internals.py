"""The private names of uvicorn, Starlette and aiokafka that the connector builds on, as
tests/test_faust_internals.py does for Faust. These libraries are pinned exactly in
pyproject.toml; an upgrade that renames or reshapes one of these names fails here, naming
it and the code that relies on it, before the edge, fuzz or outage tests fail in a way
that is hard to read."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import inspect
import ssl
from collections.abc import Callable
from importlib.metadata import version

import pytest
import uvicorn._types
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import (
    AIOKafkaConnection,
    OAuthAuthenticator,
    SaslPlainAuthenticator,
    ScramAuthenticator,
)
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.sender import Sender
from starlette.formparsers import MultiPartParser
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

Check = Callable[[], bool]


def _uvloop_tls_protocol_is_made_as_asyncios() -> bool:
    """uvloop's SSLProtocol is a Cython class without a signature to read: make one."""
    from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]

    async def made() -> bool:
        loop = asyncio.get_running_loop()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        protocol = SSLProtocol(
            loop, asyncio.Protocol(), context, loop.create_future(), True, None,
            ssl_handshake_timeout=5.0, ssl_shutdown_timeout=2.0,
        )  # fmt: skip
        methods = ("connection_made", "connection_lost", "get_buffer", "buffer_updated")
        return all(callable(getattr(protocol, name, None)) for name in methods)

    return bool(uvloop.run(made()))


def _sets(function: Callable[..., object], *attributes: str) -> Check:
    return lambda: all(f"self.{name} =" in inspect.getsource(function) for name in attributes)


def _parameters(function: Callable[..., object], *names: str) -> Check:
    return lambda: tuple(inspect.signature(function).parameters)[1:] == names


def _methods(cls: type, *names: str) -> Check:
    return lambda: all(callable(getattr(cls, name, None)) for name in names)


PROTOCOL = "receiver/protocol.py: the edge subclasses uvicorn's httptools protocol"

RELIED_ON: dict[str, tuple[str, Check]] = {
    "uvicorn HttpToolsProtocol(config, server_state, app_state, _loop)": (
        PROTOCOL,
        _parameters(HttpToolsProtocol.__init__, "config", "server_state", "app_state", "_loop"),
    ),
    "uvicorn HttpToolsProtocol handlers and hooks": (
        PROTOCOL + " and overrides or calls these",
        _methods(
            HttpToolsProtocol,
            "connection_made",
            "connection_lost",
            "data_received",
            "on_message_complete",
            "on_response_complete",
            "_unset_keepalive_if_required",
            "_should_upgrade",
        ),
    ),
    "uvicorn HttpToolsProtocol.parser/app/loop/logger/asgi_version/app_state/server_state/tasks": (
        PROTOCOL + ": feeds its parser and answers refused heads through its app",
        _sets(
            HttpToolsProtocol.__init__,
            "parser",
            "app",
            "loop",
            "logger",
            "asgi_version",
            "app_state",
            "server_state",
            "tasks",
        ),
    ),
    "uvicorn HttpToolsProtocol.transport/flow/server/client/scheme": (
        PROTOCOL + ": closes, pauses and resumes the connection",
        _sets(HttpToolsProtocol.connection_made, "transport", "flow", "server", "client", "scheme"),
    ),
    "uvicorn HttpToolsProtocol.scope/cycle": (
        PROTOCOL + ": the TARGET and BODY_ERROR extensions, a parser refusal mid-body",
        _sets(HttpToolsProtocol, "scope", "cycle"),
    ),
    "uvicorn RequestResponseCycle.response_complete/more_body/message_event": (
        PROTOCOL + ": a body the parser refuses ends the request",
        _sets(RequestResponseCycle.__init__, "response_complete", "more_body", "message_event"),
    ),
    "uvicorn._types ASGIReceiveEvent/ASGISendEvent/HTTPScope": (
        PROTOCOL + ": the refused head's scope and its receive and send",
        lambda: all(
            hasattr(uvicorn._types, name)
            for name in ("ASGIReceiveEvent", "ASGISendEvent", "HTTPScope")
        ),
    ),
    "starlette MultiPartParser._current_part/_charset/on_part_end": (
        "receiver/push.py: StrictMultiPartParser refuses a part its charset cannot decode",
        lambda: (
            _sets(MultiPartParser.__init__, "_current_part", "_charset")()
            and "self._current_part = MultipartPart()" in inspect.getsource(MultiPartParser)
            and callable(getattr(MultiPartParser, "on_part_end", None))
        ),
    ),
    "aiokafka AIOKafkaProducer._sender.sender_task": (
        "receiver/publisher.py: a batch stops waiting once the producer's sender has stopped",
        lambda: (
            _sets(AIOKafkaProducer.__init__, "_sender")()
            and isinstance(getattr(Sender, "sender_task", None), property)
        ),
    ),
    "aiokafka AIOKafkaAdminClient._send_request(request, node_id)": (
        "acls.py: CreateAcls (aiokafka has no public ACL call)",
        lambda: (
            _parameters(AIOKafkaAdminClient._send_request, "request", "node_id")()
            and inspect.iscoroutinefunction(AIOKafkaAdminClient._send_request)
        ),
    ),
    "aiokafka AIOKafkaAdminClient has no public ACL call": (
        "acls.py: once it has one (create_acls), use it instead of _send_request",
        lambda: not hasattr(AIOKafkaAdminClient, "create_acls"),
    ),
    "aiokafka AIOKafkaConnection.authenticator_plain/authenticator_scram": (
        "login.py: each login builds its authenticator with the password as it reads then",
        lambda: (
            _methods(AIOKafkaConnection, "authenticator_plain", "authenticator_scram")()
            and _sets(
                AIOKafkaConnection.__init__,
                "_loop",
                "_sasl_mechanism",
                "_sasl_plain_username",
                "_sasl_plain_password",
            )()
            and "self.authenticator_scram()" in inspect.getsource(AIOKafkaConnection)
        ),
    ),
    "aiokafka OAuthAuthenticator(*, sasl_oauth_token_provider)._token_sent, and its use": (
        "login.py: ChallengedOAuth answers the broker's error challenge after the token",
        lambda: (
            _methods(AIOKafkaConnection, "authenticator_oauth")()
            and _sets(AIOKafkaConnection.__init__, "_sasl_oauth_token_provider")()
            and _parameters(OAuthAuthenticator.__init__, "sasl_oauth_token_provider")()
            and _sets(OAuthAuthenticator.__init__, "_token_sent")()
            and _parameters(OAuthAuthenticator.step, "payload")()
            and "self.authenticator_oauth()" in inspect.getsource(AIOKafkaConnection)
        ),
    ),
    "aiokafka SaslPlainAuthenticator/ScramAuthenticator(*, loop, password, username, ...)": (
        "login.py: builds them as aiokafka's connection does",
        lambda: (
            _parameters(
                SaslPlainAuthenticator.__init__,
                "loop",
                "sasl_plain_password",
                "sasl_plain_username",
            )()
            and _parameters(
                ScramAuthenticator.__init__,
                "loop",
                "sasl_plain_password",
                "sasl_plain_username",
                "sasl_mechanism",
            )()
        ),
    ),
    "aiokafka AIOKafkaConsumer._fetcher._pending_tasks, re-raised on close (#647)": (
        "admin.py stop: finishes a stop the fetcher's close broke off; once close suppresses "
        "the cancellation of its pending tasks, admin.stop can be plain consumer.stop()",
        lambda: (
            _sets(AIOKafkaConsumer.start, "_fetcher")()
            and _sets(Fetcher.__init__, "_pending_tasks")()
            and "x.cancel()\n            await x" in inspect.getsource(Fetcher.close)
        ),
    ),
    "asyncio.sslproto.SSLProtocol(loop, app_protocol, sslcontext, waiter, server_side, ...)": (
        "receiver/protocol.py: Handshake is the loop's own TLS protocol made at accept",
        _parameters(
            asyncio.sslproto.SSLProtocol.__init__,
            "loop",
            "app_protocol",
            "sslcontext",
            "waiter",
            "server_side",
            "server_hostname",
            "call_connection_made",
            "ssl_handshake_timeout",
            "ssl_shutdown_timeout",
        ),
    ),
    "uvloop.loop.SSLProtocol, made as asyncio's is": (
        "receiver/protocol.py: Handshake on uvloop is uvloop's own TLS protocol",
        _uvloop_tls_protocol_is_made_as_asyncios,
    ),
    "aiokafka AIOKafkaConsumer._client.force_metadata_update": (
        "admin.py partitions_of: fresh metadata for a topic the consumer is not subscribed to",
        lambda: (
            _sets(AIOKafkaConsumer.__init__, "_client")()
            and callable(getattr(AIOKafkaClient, "force_metadata_update", None))
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(RELIED_ON))
def test_a_private_name_the_connector_relies_on_is_still_there(name: str) -> None:
    why, present = RELIED_ON[name]
    assert present(), (
        f"{name} is missing or changed; {why}. Re-check that code against the new version "
        "(tests/test_edge.py, test_fuzz.py, test_receiver_outage.py, test_security.py) "
        "before moving the pin in pyproject.toml."
    )


def test_the_versions_these_names_were_checked_against_are_installed() -> None:
    assert version("uvicorn") == "0.54.0"
    assert version("httptools") == "0.9.0"
    assert version("starlette") == "1.10.0"
    assert version("aiokafka") == "0.14.0"
    assert version("uvloop") == "0.23.0"
