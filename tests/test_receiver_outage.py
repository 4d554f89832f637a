"""The broker goes away under a stream of pushes, and comes back: no push is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import admin
from connector.local.broker import LocalKafka
from connector.receiver.app import create_app
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, start_local_kafka
from tests.receiver_helpers import on_free_ports, serving_receiver
from tests.support import EXAMPLE_FIELDS, gauge

pytestmark = pytest.mark.kafka  # starts its own broker


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    with start_local_kafka(tmp_path / "kafka") as local:
        yield local


class Pusher:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: dict[str, tuple[int, str]] = {}
        self.sent = 0
        self.stopping = False
        self.progress = asyncio.Event()

    async def run(self, lane: int) -> None:
        while not self.stopping:
            messageid = f"outage-{lane}-{self.sent}"
            self.sent += 1
            response = await self.http.post(
                "/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": messageid}
            )
            self.answers[messageid] = (response.status_code, response.text)
            self.progress.set()

    async def until(self, count: int, deadline: float = 60) -> None:
        async with asyncio.timeout(deadline):
            while len(self.answers) < count:
                self.progress.clear()
                await self.progress.wait()


async def test_pushes_during_a_broker_outage_are_spooled_and_drained(
    own_kafka: LocalKafka, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=own_kafka.bootstrap_servers,
        topic_partitions=3,
        spool_dir=tmp_path / "spool",
        receiver_kafka_timeout_ms=500,
    )
    names = TopicNames()
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, names))

    settings = on_free_ports(settings)
    async with (
        serving_receiver(settings, create_app(settings, names)) as ports,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.push}", timeout=30) as http,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.management}") as management,
    ):
        pusher = Pusher(http)
        lanes = [asyncio.create_task(pusher.run(lane)) for lane in range(4)]
        await pusher.until(100)
        await asyncio.to_thread(own_kafka.kill)
        before_outage = len(pusher.answers)
        await pusher.until(before_outage + 200)
        spooled = gauge((await management.get("/metrics")).text, "nxcloud_receiver_spool_depth")
        await asyncio.to_thread(own_kafka.start)
        await pusher.until(len(pusher.answers) + 100)
        pusher.stopping = True
        await asyncio.gather(*lanes)

        async with asyncio.timeout(60):
            while True:
                metrics = (await management.get("/metrics")).text
                if (
                    gauge(metrics, "nxcloud_receiver_spool_depth") == 0
                    and gauge(metrics, "nxcloud_receiver_kafka_up") == 1
                ):
                    break
                await asyncio.sleep(0.1)

    assert spooled > 0
    assert set(pusher.answers.values()) == {(200, "success")}
    answered = set(pusher.answers)
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        names.dr_raw,
        lambda values: answered <= {v["fields"]["messageid"] for v in values},
        deadline=60,
    )
    stored = [r["fields"]["messageid"] for r in records]
    assert answered <= set(stored)
    receipts = [r["receipt_id"] for r in records]
    duplicates = len(receipts) - len(set(receipts))
    print(f"answered {len(answered)}, stored {len(records)}, exact repeats {duplicates}")
    by_receipt: dict[str, Any] = {}
    for record in records:
        assert by_receipt.setdefault(record["receipt_id"], record) == record
