"""The poller against the sandbox over real HTTP, storing into the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connector import admin
from connector.clock import utcnow
from connector.local import sandbox
from connector.poller.backfill import backfill, windows
from connector.poller.loop import Poller
from connector.settings import Secret, Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, serving
from tests.support import sandboxed_poller


@dataclass
class Rig:
    settings: Settings
    names: TopicNames
    stand_in: sandbox.Sandbox
    url: str


@pytest.fixture
async def rig(settings: Settings, topic_names: TopicNames) -> AsyncIterator[Rig]:
    world = sandbox.World(seed=7, origin=utcnow() - timedelta(seconds=40), rate=1.0, max_seconds=2)
    stand_in = sandbox.Sandbox(world, cdr_delay=timedelta(seconds=1))
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, topic_names))
    async with serving(sandbox.create_app(stand_in)) as url:
        poller_settings = dataclasses.replace(
            sandboxed_poller(settings, url), account=topic_names.dr_raw.rsplit(".", 1)[-1]
        )
        yield Rig(poller_settings, topic_names, stand_in, url)


@dataclasses.dataclass
class Running:
    stop: asyncio.Event
    task: asyncio.Task[None]
    poller: Poller


async def start(rig: Rig, settings: Settings | None = None) -> tuple[Running, httpx.AsyncClient]:
    http = httpx.AsyncClient(timeout=10)
    poller = Poller(settings or rig.settings, rig.names, http)
    stop = asyncio.Event()
    return Running(stop, asyncio.create_task(poller.run(stop)), poller), http


async def finish(running: Running, http: httpx.AsyncClient) -> None:
    running.stop.set()
    await running.task
    await http.aclose()


def expected_ids(world: sandbox.World, start: datetime, end: datetime) -> set[int]:
    return {call.cdr_id for call in world.calls_between(start, end)}


def ids(values: list[Any]) -> set[int]:
    return {value["row"]["id"] for value in values}


async def stored_rows(rig: Rig, wanted: set[int]) -> list[Any]:
    """The raw CDR records, once every wanted row id is among them."""
    return await read_topic(
        rig.settings.kafka_bootstrap_servers,
        rig.names.cdr_raw,
        lambda values: wanted <= ids(values),
        deadline=120,
    )


async def test_every_call_is_stored_within_one_request_per_second(rig: Rig) -> None:
    world = rig.stand_in.world
    wanted = expected_ids(world, world.origin, world.origin + timedelta(seconds=30))
    running, http = await start(rig)
    try:
        values = await stored_rows(rig, wanted)
    finally:
        await finish(running, http)

    assert wanted <= ids(values)
    gaps = [b - a for a, b in zip(rig.stand_in.requests, rig.stand_in.requests[1:], strict=False)]
    assert min(gaps) >= 1.0
    first = values[0]
    assert set(first) == {"account", "fetched_at", "query", "row"}
    assert isinstance(first["row"]["id"], int)
    assert isinstance(first["row"]["messageid"], int)
    assert {"service", "start", "end", "page"} <= set(first["query"])
    assert max(v["query"]["page"] for v in values) > 1


async def test_refusals_and_429_are_backed_off_and_retried(rig: Rig) -> None:
    rig.stand_in.faults.extend(["429", "code0", "500"])
    world = rig.stand_in.world
    wanted = expected_ids(world, world.origin, world.origin + timedelta(seconds=10))
    running, http = await start(rig)
    try:
        await stored_rows(rig, wanted)
    finally:
        await finish(running, http)
    requests = rig.stand_in.requests
    assert requests[1] - requests[0] >= 2.0
    metrics = running.poller.metrics.requests
    assert metrics.labels("http_429")._value.get() == 1
    assert metrics.labels("refused")._value.get() == 1
    assert metrics.labels("http_500")._value.get() == 1


async def test_unreadable_answers_are_malformed_and_backed_off_never_an_exit(rig: Rig) -> None:
    rig.stand_in.faults.extend(["gzip", "html", "shape", "multiple"])
    world = rig.stand_in.world
    wanted = expected_ids(world, world.origin, world.origin + timedelta(seconds=10))
    running, http = await start(rig)
    try:
        await stored_rows(rig, wanted)
        assert not running.task.done()
    finally:
        await finish(running, http)
    metrics = running.poller.metrics
    assert metrics.requests.labels("malformed")._value.get() == 3
    assert metrics.requests.labels("refused")._value.get() == 1
    assert metrics.credential_failures._value.get() == 0
    requests = rig.stand_in.requests
    assert requests[1] - requests[0] >= 1.0


async def test_a_late_cost_is_picked_up_by_a_repoll(rig: Rig) -> None:
    rig.stand_in.settle_delay = timedelta(seconds=25)
    settings = dataclasses.replace(rig.settings, poller_repoll_after_seconds=(20,))
    running, http = await start(rig, settings)

    def settled_seen(values: list[Any]) -> bool:
        prices: dict[int, set[float]] = {}
        for value in values:
            prices.setdefault(value["row"]["id"], set()).add(value["row"]["customer_price"])
        return any(len(seen) > 1 for seen in prices.values())

    try:
        values = await read_topic(
            settings.kafka_bootstrap_servers, rig.names.cdr_raw, settled_seen, deadline=120
        )
    finally:
        await finish(running, http)
    assert settled_seen(values)


async def test_bad_credentials_are_reported_without_revealing_them(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    appkey, secret = "wrong-appkey-9c1e", "wrong-secret-4f7a"
    settings = dataclasses.replace(
        rig.settings, nxcloud_appkey=Secret(appkey), nxcloud_secretkey=Secret(secret)
    )
    caplog.set_level(logging.DEBUG)
    running, http = await start(rig, settings)
    try:
        async with asyncio.timeout(30):
            while running.poller.metrics.credential_failures._value.get() < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await finish(running, http)
    text = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "NXCLOUD_SECRETKEY" in text
    assert secret not in text
    assert appkey not in text
    assert len(rig.stand_in.requests) == 1


async def test_two_replicas_elect_one_active_poller(rig: Rig) -> None:
    world = rig.stand_in.world
    wanted = expected_ids(world, world.origin, world.origin + timedelta(seconds=20))
    first, first_http = await start(rig)
    second, second_http = await start(rig)
    try:
        await stored_rows(rig, wanted)
        active = [p.poller.metrics.active._value.get() for p in (first, second)]
    finally:
        await finish(first, first_http)
        await finish(second, second_http)
    assert sorted(active) == [0, 1]
    gaps = [b - a for a, b in zip(rig.stand_in.requests, rig.stand_in.requests[1:], strict=False)]
    assert min(gaps) >= 1.0


async def test_backfill_stores_a_past_range_with_progress_and_exits(rig: Rig) -> None:
    world = rig.stand_in.world
    since = world.origin.replace(microsecond=0)
    until = since + timedelta(seconds=20)
    out = io.StringIO()
    pages, rows = await backfill(rig.settings, since, until, rig.names, out, now=utcnow())

    values = await read_topic(
        rig.settings.kafka_bootstrap_servers, rig.names.cdr_raw, lambda v: len(v) >= rows
    )
    assert expected_ids(world, since, until) <= ids(values)
    assert pages >= 2
    assert "ETA" in out.getvalue()
    assert "100%" in out.getvalue()


def test_backfill_windows_tile_the_range_per_service_within_24_hours() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    planned = windows(since, since + timedelta(hours=30))
    assert [(w.service, w.end - w.start) for w in planned] == [
        (0, timedelta(hours=24)),
        (0, timedelta(hours=6)),
        (1, timedelta(hours=24)),
        (1, timedelta(hours=6)),
    ]
