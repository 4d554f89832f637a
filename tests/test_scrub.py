"""What the provider or a broker says is logged only with the connector's secrets masked."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus, urlencode

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


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda found: found.group().lower(), text)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(appkey: str, secretkey: str) -> dict[str, str]:
    """The credentials as a provider might echo them, by how."""
    body = urlencode({"appkey": appkey, "secretkey": secretkey})
    said = {
        "as is": appkey,
        "%-encoded": quote(appkey, safe=""),
        "%-encoded, lower-case hex": lower_hex(quote(appkey, safe="")),
        "%-encoded, mixed-case hex": quote(appkey, safe="").replace("%C3", "%c3"),
        "partly %-encoded": appkey.replace("/", "%2f"),
        "partly %-encoded, the rest raw": appkey.replace("é", "%C3%A9"),
        "%-encoded twice": quote(quote(appkey, safe=""), safe=""),
        "form-encoded": quote_plus(appkey),
        "a raw + read as a space": appkey.replace("+", " "),
        "JSON": json.dumps(appkey),
        "JSON, raw UTF-8": json.dumps(appkey, ensure_ascii=False),
        "JSON, upper-case \\u": json.dumps(appkey).replace("\\u00e9", "\\u00E9"),
        "JSON, escaped slash (PHP)": json.dumps(appkey).replace("/", "\\/"),
        "JSON of the secretkey": json.dumps(secretkey),
        "the secretkey, lower-case hex": lower_hex(quote(secretkey, safe="")),
        "base64": b64(appkey),
        "base64, URL-safe": base64.urlsafe_b64encode(appkey.encode()).decode(),
        "base64, unpadded": b64(secretkey).rstrip("="),
        "base64 of appkey:secretkey": b64(f"{appkey}:{secretkey}"),
        "HTTP Basic": "Basic " + b64(f"{appkey}:{secretkey}"),
        "base64 of the form, %-encoded": quote(b64(body), safe=""),
    }
    for offset in range(3):  # inside a longer base64 text, at each alignment
        said[f"base64 of the body, {offset} bytes in"] = b64("&" * offset + body + "&page=1")
        said[f"base64 of appkey, {offset} bytes in"] = b64("k" * offset + appkey + ", ok")
    return said


def test_scrub_masks_the_credentials_in_every_form_a_provider_may_echo() -> None:
    secrets = [Secret(APPKEY), Secret(SECRETKEY)]
    for how, echoed in forms(APPKEY, SECRETKEY).items():
        scrubbed = scrub(f"error: {echoed} (code 0)", secrets)
        assert scrubbed.startswith("error: "), how
        assert scrubbed.endswith(" (code 0)"), how
        assert "**********" in scrubbed, how
        for fragment in ("Qz7W", "Vq9K", "échoé", "%C3%A9", "%c3%a9"):
            assert fragment not in scrubbed, f"{how}: {scrubbed}"
        for secret in (APPKEY, SECRETKEY, f"{APPKEY}:{SECRETKEY}"):
            encoded = b64(secret).rstrip("=")
            # what the mask may leave of a base64 text: the characters at its edges
            assert encoded[2:-2] not in scrubbed, f"{how}: {scrubbed}"


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
    """A CDR API that refuses and echoes the request back in its message, in every form."""
    form = await request.form()
    body = urlencode({key: str(value) for key, value in form.items()})
    appkey, secretkey = str(form["appkey"]), str(form["secretkey"])
    echoed = " ".join(forms(appkey, secretkey).values())
    message = f"appkey or secretkey error: {dict(form)} {body} {request.url} {echoed}"
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
    for fragment in (
        "Qz7W",
        "Vq9K",
        "échoé",
        b64(APPKEY)[2:-2],
        b64(f"{APPKEY}:{SECRETKEY}")[2:-2],
    ):
        assert fragment not in text
