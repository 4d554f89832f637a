"""On a three-broker cluster with production topic settings, the leader of the raw DR
topic's partitions is SIGKILLed while pushes arrive and the worker and poller run: no
push answered `success` is lost and no call event is missing."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from connector import admin
from connector.clock import utcnow
from connector.local import sandbox
from connector.local.broker import LocalCluster, cluster_configs, free_port
from connector.receiver.app import create_app
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.fault_helpers import REPEAT_BOUND, Load, until_drained, verify
from tests.kafka_helpers import read_topic, serving
from tests.process_helpers import sandbox_poller_env, start_poller
from tests.worker_helpers import await_ready, start_worker

pytestmark = pytest.mark.kafka  # starts its own cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    configs = cluster_configs(
        tmp_path / "cluster",
        [free_port() for _ in range(3)],
        [free_port() for _ in range(3)],
        heap="384m",
    )
    with LocalCluster(configs) as running:
        yield running


async def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> node id of its leader."""
    async with admin.admin_client(Settings(kafka_bootstrap_servers=bootstrap)) as client:
        (described,) = await client.describe_topics([topic])
    return {p["partition"]: p["leader"] for p in described["partitions"]}


async def failed_over(bootstrap: str, topic: str, gone: int) -> dict[int, int]:
    async with asyncio.timeout(90):
        while True:
            try:
                current = await leaders(bootstrap, topic)
            except KafkaError:  # the admin client asked the dead node
                current = {0: gone}
            if gone not in current.values() and -1 not in current.values():
                return current
            await asyncio.sleep(0.5)


async def test_leader_sigkill_on_three_brokers_loses_no_push_and_no_call_event(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap_servers
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_partitions=3,
        topic_replication_factor=3,
        topic_suffix=suffix,
        receiver_kafka_timeout_ms=500,
        spool_dir=tmp_path / "spool",
    )
    names = TopicNames.of(settings)
    await admin.converge(settings, declare(settings, names))
    world = sandbox.World(seed=14, origin=utcnow() - timedelta(seconds=60), rate=1.0, max_seconds=2)
    stand_in = sandbox.Sandbox(world, cdr_delay=timedelta(seconds=1))
    polled = {
        call.cdr_id
        for call in world.calls_between(world.origin, world.origin + timedelta(seconds=70))
    }
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_TOPIC_PARTITIONS": "3",
        "NXCLOUD_TOPIC_REPLICATION_FACTOR": "3",
    }
    worker = start_worker(env, tmp_path / "worker")
    async with serving(sandbox.create_app(stand_in)) as cdr_url:
        poller = start_poller(sandbox_poller_env(env, cdr_url, suffix))
        try:
            await asyncio.to_thread(await_ready, worker)
            async with serving(create_app(settings, names)) as url:
                load = Load(url)
                load.start()
                await load.more(300)
                leader = (await leaders(bootstrap, names.dr_raw))[0]
                victim = cluster.node(leader)
                await asyncio.to_thread(victim.kill)
                await load.more(300)
                moved = await failed_over(bootstrap, names.dr_raw, leader)
                await load.more(500)  # on the new leaders, the victim still down
                await asyncio.to_thread(victim.start)
                await load.more(300)
                await load.stop()
                await until_drained(url)
            assert set(load.answers.values()) == {"200 success"}
            assert leader not in moved.values()
            assert await verify(bootstrap, names, load) <= REPEAT_BOUND
            pushed = load.succeeded

            def complete(values: list[Any]) -> bool:
                dr = {v["message_id"] for v in values if "dr" in v["sources"]}
                cdr = {v["cdr_id"] for v in values if "cdr" in v["sources"]}
                return pushed <= dr and {str(c) for c in polled} <= {str(c) for c in cdr}

            events = await read_topic(bootstrap, names.call_events, complete, deadline=240)
        finally:
            for process in (poller, worker):
                process.terminate()
                await asyncio.to_thread(process.wait, 60)
    assert complete(events)
