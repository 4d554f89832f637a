"""What the provider or a broker says is logged only with the connector's secrets masked."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connector import cdr, clients
from connector.poller.loop import CdrSource, PollerMetrics
from connector.ratelimit import TokenBucket
from connector.settings import Secret, Settings, scrub
from tests.kafka_helpers import serving

# Their fragments are no hex digits: a memory address in a log record cannot hold them.
APPKEY = "appkey+Qz7W/échoé"
SECRETKEY = 'sk-"Vq9K"&x=1'


def test_scrub_masks_a_secret_as_it_is_and_as_a_form_or_json_quotes_it() -> None:
    secrets = [Secret(APPKEY), Secret(SECRETKEY)]
    said = " | ".join(
        [APPKEY, SECRETKEY, urlencode({"appkey": APPKEY, "secretkey": SECRETKEY}),
         '{"secretkey": "sk-\\"Vq9K\\"&x=1"}']
    )  # fmt: skip
    scrubbed = scrub(said, secrets)
    for secret in ("Qz7W", "Vq9K"):
        assert secret not in scrubbed
    assert scrub("nothing secret here", secrets) == "nothing secret here"


def test_settings_scrub_every_secret_they_hold() -> None:
    settings = Settings.from_env(
        {"NXCLOUD_APPKEY": "the-appkey-1", "NXCLOUD_RECEIVER_TOKEN": "the-token-2"}
    )
    assert settings.scrub("the-appkey-1 and the-token-2") == "********** and **********"


def test_a_broker_detail_is_scrubbed_in_the_refusal_line() -> None:
    settings = Settings.from_env({"NXCLOUD_APPKEY": "leaky-appkey"})
    line = clients.explain(TopicAuthorizationFailedError("topic-leaky-appkey"), settings)
    assert line is not None
    assert "leaky-appkey" not in line
    assert "topic-**********" in line


async def echo(request: Request) -> JSONResponse:
    """A CDR API that refuses and echoes the whole request back in its message."""
    form = await request.form()
    body = urlencode({key: str(value) for key, value in form.items()})
    message = f"appkey or secretkey error: {dict(form)} {body} {request.url}"
    return JSONResponse({"code": "0", "msg": message})


async def test_a_refusal_echoing_the_credentials_leaves_no_trace_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("connector", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    app = Starlette(routes=[Route("/cdr", echo, methods=["POST"])])
    async with serving(app) as url, httpx.AsyncClient(timeout=10) as http:
        settings = Settings.from_env(
            {"NXCLOUD_APPKEY": APPKEY, "NXCLOUD_SECRETKEY": SECRETKEY,
             "NXCLOUD_CDR_URL": url + "/cdr"}
        )  # fmt: skip
        metrics = PollerMetrics()
        source = CdrSource(settings, http, TokenBucket(100.0), metrics)
        end = datetime.now(UTC).replace(microsecond=0)
        asking = asyncio.create_task(source.page(cdr.Window(0, end - timedelta(minutes=5), end), 1))
        try:
            async with asyncio.timeout(30):
                while metrics.credential_failures._value.get() < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
    refused = [r for r in caplog.records if r.getMessage().startswith("cdr query refused")]
    assert len(refused) == 1
    assert "appkey or secretkey error" in getattr(refused[0], "provider_message", "")
    text = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    for secret in (APPKEY, SECRETKEY):
        for form in (secret, urlencode({"k": secret})[2:]):
            assert form not in text
    assert "Qz7W" not in text
    assert "Vq9K" not in text
