"""The receiver over real HTTP against the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connector.local.broker import free_port
from connector.receiver.app import create_app, edge
from connector.receiver.spool import Spool
from connector.settings import Secret, Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic, serving
from tests.receiver_helpers import Ports, on_free_ports, serving_receiver
from tests.support import EXAMPLE_FIELDS, VERIFICATION


@pytest.fixture
def receiver_settings(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(settings, spool_dir=tmp_path / "spool", receiver_id="receiver-t")


@pytest.fixture
async def topics(receiver_settings: Settings, topic_names: TopicNames) -> TopicNames:
    from connector import admin
    from connector.topics import declare

    async with admin.admin_client(receiver_settings) as client:
        await admin.ensure(client, declare(receiver_settings, topic_names))
    return topic_names


@pytest.fixture
async def ports(receiver_settings: Settings, topics: TopicNames) -> AsyncIterator[Ports]:
    settings = on_free_ports(receiver_settings)
    async with serving_receiver(settings, create_app(settings, topics)) as ports:
        yield ports


@pytest.fixture
async def client(ports: Ports) -> AsyncIterator[httpx.AsyncClient]:
    """On the push port."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.push}") as http:
        yield http


@pytest.fixture
async def management(ports: Ports) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.management}") as http:
        yield http


def by_messageid(messageid: str) -> Any:
    def found(values: list[Any]) -> bool:
        return any(v["fields"].get("messageid") == messageid for v in values)

    return found


async def stored(settings: Settings, topic: str, messageid: str) -> dict[str, Any]:
    values = await read_topic(settings.kafka_bootstrap_servers, topic, by_messageid(messageid))
    return next(v for v in values if v["fields"]["messageid"] == messageid)


async def test_provider_example_as_query_string_is_stored_with_every_field(
    client: httpx.AsyncClient, receiver_settings: Settings, topics: TopicNames
) -> None:
    response = await client.get("/nxcloud/voice/dr", params=EXAMPLE_FIELDS)

    assert (response.status_code, response.text) == (200, "success")
    assert response.headers["content-type"].startswith("text/plain")
    record = await stored(receiver_settings, topics.dr_raw, EXAMPLE_FIELDS["messageid"])
    assert record["fields"] == EXAMPLE_FIELDS
    assert record["fields"]["ivr_result"] == ""
    assert record["receiver"] == "receiver-t"
    assert record["remote_addr"] == "127.0.0.1"
    assert record["method"] == "GET"
    assert record["received_at"].endswith("Z")


async def test_provider_example_as_form_body_is_stored_with_every_field(
    client: httpx.AsyncClient, receiver_settings: Settings, topics: TopicNames
) -> None:
    fields = {**EXAMPLE_FIELDS, "messageid": "form-1", "extra_field": "kept"}
    response = await client.post("/nxcloud/voice/dr", data=fields)

    assert (response.status_code, response.text) == (200, "success")
    record = await stored(receiver_settings, topics.dr_raw, "form-1")
    assert record["fields"] == fields
    assert record["method"] == "POST"


async def test_voice_type_1_as_multipart_keeps_record_url_and_body_beats_query(
    client: httpx.AsyncClient, receiver_settings: Settings, topics: TopicNames
) -> None:
    response = await client.post(
        "/nxcloud/voice/dr",
        params={"messageid": "from-query", "duration": "99"},
        files={name: (None, value) for name, value in VERIFICATION.items()},
    )

    assert (response.status_code, response.text) == (200, "success")
    record = await stored(receiver_settings, topics.dr_raw, "35618")
    assert record["fields"] == VERIFICATION
    assert record["content_type"].startswith("multipart/form-data")


async def test_an_invalid_push_answers_error_and_lands_on_the_dead_letter_topic(
    client: httpx.AsyncClient, receiver_settings: Settings, topics: TopicNames
) -> None:
    fields = {**EXAMPLE_FIELDS, "messageid": "bad-1", "voice_type": "7"}
    response = await client.post(
        "/nxcloud/voice/dr",
        content="&".join(f"{k}={v}" for k, v in fields.items()),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert (response.status_code, response.text) == (400, "error")
    letters = await read_topic(
        receiver_settings.kafka_bootstrap_servers, topics.dead_letter, lambda v: len(v) >= 1
    )
    assert letters[0]["reason"] == "voice_type must be 0 or 1, got '7'"
    assert "messageid=bad-1" in letters[0]["body"]
    assert letters[0]["source"] == "receiver"


async def test_missing_fields_and_bad_numbers_are_named(client: httpx.AsyncClient) -> None:
    missing = {k: v for k, v in EXAMPLE_FIELDS.items() if k not in ("cycle", "ivr_result")}
    bad_number = {**EXAMPLE_FIELDS, "second": "ten"}
    assert (await client.post("/nxcloud/voice/dr", data=missing)).status_code == 400
    assert (await client.post("/nxcloud/voice/dr", data=bad_number)).status_code == 400


async def test_a_body_over_the_limit_is_refused_with_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/nxcloud/voice/dr",
        content=b"phone=" + b"1" * 70000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.text) == (413, "error")


async def test_too_many_fields_are_refused_with_400(client: httpx.AsyncClient) -> None:
    fields = {**EXAMPLE_FIELDS, **{f"f{i}": "x" for i in range(100)}}
    response = await client.post("/nxcloud/voice/dr", data=fields)
    assert (response.status_code, response.text) == (400, "error")


async def test_health_readiness_and_metrics(
    client: httpx.AsyncClient, management: httpx.AsyncClient
) -> None:
    await client.get("/nxcloud/voice/dr", params={**EXAMPLE_FIELDS, "messageid": "m-1"})
    assert (await management.get("/healthz")).status_code == 200
    assert (await management.get("/readyz")).text == "ready"
    metrics = (await management.get("/metrics")).text
    assert 'nxcloud_receiver_requests_total{outcome="success"}' in metrics
    assert "nxcloud_receiver_publish_seconds_bucket" in metrics
    assert "nxcloud_receiver_spool_depth 0.0" in metrics
    assert re.search(r"^nxcloud_receiver_spool_max_bytes [1-9]", metrics, re.MULTILINE)


async def test_a_token_in_the_path_or_query_is_required_when_configured(
    receiver_settings: Settings, topics: TopicNames
) -> None:
    guarded = dataclasses.replace(receiver_settings, receiver_token=Secret("s3cret-token"))
    async with (
        serving(create_app(guarded, topics), edge(guarded)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        fields = {**EXAMPLE_FIELDS, "messageid": "tok-1"}
        no_token = await http.post("/nxcloud/voice/dr", data=fields)
        wrong = await http.post("/nxcloud/voice/dr/wrong", data=fields)
        in_path = await http.post("/nxcloud/voice/dr/s3cret-token", data=fields)
        in_query = await http.get(
            "/nxcloud/voice/dr",
            params={**fields, "messageid": "tok-2", "token": "s3cret-token"},
        )

    assert [r.status_code for r in (no_token, wrong, in_path, in_query)] == [403, 403, 200, 200]
    records = await read_topic(
        guarded.kafka_bootstrap_servers, topics.dr_raw, lambda v: len(v) >= 2
    )
    assert sorted(r["fields"]["messageid"] for r in records) == ["tok-1", "tok-2"]
    assert all("token" not in r["fields"] for r in records)
    assert "s3cret-token" not in str(records)


async def test_the_network_allow_list_honours_forwarded_for_only_from_proxies(
    receiver_settings: Settings, topics: TopicNames
) -> None:
    listed = dataclasses.replace(
        receiver_settings,
        receiver_allow_networks=(ip_network("203.0.113.0/24"),),
        receiver_trusted_proxies=(ip_network("127.0.0.0/8"),),
    )
    untrusted = dataclasses.replace(listed, receiver_trusted_proxies=())
    fields = {**EXAMPLE_FIELDS, "messageid": "net-1"}
    async with (
        serving(create_app(listed, topics), edge(listed)) as url,
        httpx.AsyncClient(base_url=url) as h,
    ):
        direct = await h.post("/nxcloud/voice/dr", data=fields)
        allowed = await h.post(
            "/nxcloud/voice/dr", data=fields, headers={"x-forwarded-for": "203.0.113.9"}
        )
        other = await h.post(
            "/nxcloud/voice/dr", data=fields, headers={"x-forwarded-for": "198.51.100.1"}
        )
    async with (
        serving(create_app(untrusted, topics), edge(untrusted)) as url,
        httpx.AsyncClient(base_url=url) as h,
    ):
        forged = await h.post(
            "/nxcloud/voice/dr", data=fields, headers={"x-forwarded-for": "203.0.113.9"}
        )

    assert [r.status_code for r in (direct, allowed, other, forged)] == [403, 200, 403, 403]
    record = await stored(listed, topics.dr_raw, "net-1")
    assert record["remote_addr"] == "203.0.113.9"


async def test_without_kafka_pushes_are_spooled_until_the_spool_is_full_then_503(
    tmp_path: Path,
) -> None:
    unreachable = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1500,
        receiver_kafka_timeout_ms=200,
    )
    unreachable = on_free_ports(unreachable)
    async with (
        serving_receiver(unreachable, create_app(unreachable)) as ports,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.push}") as http,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.management}") as management,
    ):
        assert (await management.get("/readyz")).text == "ready"
        answers = [
            (await http.post("/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": f"s{i}"}))
            for i in range(4)
        ]
        metrics = (await management.get("/metrics")).text
    assert [(a.status_code, a.text) for a in answers[:2]] == [(200, "success")] * 2
    assert (answers[-1].status_code, answers[-1].text) == (503, "error")
    assert "nxcloud_receiver_spool_depth 2.0" in metrics
    assert 'nxcloud_receiver_requests_total{outcome="unavailable"}' in metrics
    spool = Spool(tmp_path / "spool", 1500)
    spool.open()
    stored = [orjson.loads(entry.value) for entry in await spool.oldest(10)]
    assert [record["fields"]["messageid"] for record in stored] == ["s0", "s1"]


async def test_a_stalled_body_is_cut_off_with_408(
    receiver_settings: Settings, topics: TopicNames
) -> None:
    patient = dataclasses.replace(receiver_settings, receiver_read_timeout_seconds=1)
    async with serving(create_app(patient, topics), edge(patient)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /nxcloud/voice/dr HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
            b"phone=86150"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read(5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert body == b"error"
