"""Faults under concurrent push load: every push answered `success` is on the raw topic,
and exact repeats stay within the bound docs/delivery.md states."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import admin
from connector.local.broker import LocalKafka, free_port
from connector.receiver.app import create_app
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.fault_helpers import LANES, REPEAT_BOUND, Load, metric, until_drained, verify
from tests.kafka_helpers import serving, start_local_kafka

pytestmark = pytest.mark.kafka  # starts its own broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with start_local_kafka(tmp_path_factory.mktemp("matrix-kafka")) as local:
        yield local


async def topics_of(bootstrap: str) -> tuple[Settings, TopicNames]:
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_partitions=3,
        topic_suffix=uuid.uuid4().hex[:10],
        receiver_kafka_timeout_ms=500,
    )
    names = TopicNames.of(settings)
    await admin.converge(settings, declare(settings, names))
    return settings, names


async def test_broker_sigkill_and_restart(broker: LocalKafka, tmp_path: Path) -> None:
    settings, names = await topics_of(broker.bootstrap_servers)
    settings = dataclasses.replace(settings, spool_dir=tmp_path / "spool")
    async with serving(create_app(settings, names)) as url:
        load = Load(url)
        load.start()
        await load.more(300)
        await asyncio.to_thread(broker.kill)
        await load.more(500)
        await asyncio.to_thread(broker.start)
        await load.more(300)
        await load.stop()
        await until_drained(url)
    assert set(load.answers.values()) == {"200 success"}
    assert await verify(broker.bootstrap_servers, names, load) <= REPEAT_BOUND


async def test_broker_sigstop_longer_than_the_request_timeout(
    broker: LocalKafka, tmp_path: Path
) -> None:
    settings, names = await topics_of(broker.bootstrap_servers)
    settings = dataclasses.replace(settings, spool_dir=tmp_path / "spool")
    async with serving(create_app(settings, names)) as url:
        load = Load(url)
        load.start()
        await load.more(300)
        broker.pause()
        try:
            await asyncio.sleep(60)  # the fault itself: frozen for longer than 15 s requests
            spooled = await metric(url, "nxcloud_receiver_spool_depth")
        finally:
            broker.resume()
        await load.more(300)
        await load.stop()
        await until_drained(url)
    assert spooled > 0
    assert set(load.answers.values()) == {"200 success"}
    assert await verify(broker.bootstrap_servers, names, load) <= REPEAT_BOUND


def start_receiver(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "receiver"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@asynccontextmanager
async def receiver_process(settings: Settings, spool: Path) -> AsyncIterator[tuple[str, Any, str]]:
    """The push URL, the process and the management URL (/metrics, /healthz)."""
    port, management_port = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": settings.topic_suffix,
        "NXCLOUD_RECEIVER_PORT": str(port),
        "NXCLOUD_RECEIVER_HOST": "127.0.0.1",
        "NXCLOUD_RECEIVER_MANAGEMENT_PORT": str(management_port),
        "NXCLOUD_RECEIVER_MANAGEMENT_HOST": "127.0.0.1",
        "NXCLOUD_SPOOL_DIR": str(spool),
        "NXCLOUD_RECEIVER_KAFKA_TIMEOUT_MS": "500",
    }
    process = start_receiver(env)
    url = f"http://127.0.0.1:{port}"
    management = f"http://127.0.0.1:{management_port}"
    try:
        async with asyncio.timeout(60), httpx.AsyncClient(base_url=management) as http:
            while True:
                try:
                    await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield url, process, management
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)


async def test_receiver_sigkill_with_the_spool_on_disk_and_restart(
    broker: LocalKafka, tmp_path: Path
) -> None:
    settings, names = await topics_of(broker.bootstrap_servers)
    spool = tmp_path / "spool"
    async with receiver_process(settings, spool) as (url, process, management):
        load = Load(url)
        load.start()
        await load.more(200)
        await asyncio.to_thread(broker.kill)
        try:
            await load.more(600)
            spooled = await metric(management, "nxcloud_receiver_spool_depth")
            process.kill()
            await asyncio.to_thread(process.wait)
            await load.stop()
        finally:
            await asyncio.to_thread(broker.start)
    async with receiver_process(settings, spool) as (url, _process, management):
        load.url = url
        load.stopping = False
        load.start()
        await load.more(200)
        await load.stop()
        await until_drained(management)
    assert spooled > 100
    failed = {m: a for m, a in load.answers.items() if a != "200 success"}
    assert len(failed) <= LANES, failed  # only pushes cut off by the kill itself
    assert await verify(broker.bootstrap_servers, names, load) <= REPEAT_BOUND
