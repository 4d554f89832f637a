"""A poller killed at random points and restarted loses no row."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from datetime import timedelta

from connector import admin
from connector.clock import utcnow
from connector.local import sandbox
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, serving
from tests.process_helpers import sandbox_poller_env, start_poller


async def requests_after(stand_in: sandbox.Sandbox, seen: int, deadline: float = 60.0) -> None:
    async with asyncio.timeout(deadline):
        while len(stand_in.requests) <= seen:  # noqa: ASYNC110 (the stand-in has no event)
            await asyncio.sleep(0.05)


async def test_a_poller_killed_repeatedly_loses_no_row(
    settings: Settings, topic_names: TopicNames
) -> None:
    world = sandbox.World(seed=11, origin=utcnow() - timedelta(seconds=60), rate=1.0, max_seconds=2)
    stand_in = sandbox.Sandbox(world, cdr_delay=timedelta(seconds=1))
    names = TopicNames()
    suffix = topic_names.dr_raw.rsplit(".", 1)[-1]
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, names.with_suffix(suffix)))
    wanted = {
        call.cdr_id
        for call in world.calls_between(world.origin, world.origin + timedelta(seconds=70))
    }
    chaos = random.Random(suffix)
    async with serving(sandbox.create_app(stand_in)) as url:
        env = sandbox_poller_env(
            {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "NXCLOUD_TOPIC_SUFFIX": suffix,
            },
            url,
            suffix,
        )
        for _ in range(3):
            before = len(stand_in.requests)
            process = start_poller(env)
            await requests_after(stand_in, before)  # killed mid-work, not before it began
            await asyncio.sleep(chaos.uniform(0.0, 4.0))  # a random moment to kill at
            process.send_signal(signal.SIGKILL)
            process.wait()
        process = start_poller(env)
        try:
            values = await read_topic(
                settings.kafka_bootstrap_servers,
                names.with_suffix(suffix).cdr_raw,
                lambda values: wanted <= {v["row"]["id"] for v in values},
                deadline=180,
            )
        finally:
            process.terminate()
            process.wait(30)
    assert wanted <= {v["row"]["id"] for v in values}
    gaps = [b - a for a, b in zip(stand_in.requests, stand_in.requests[1:], strict=False)]
    assert min(gaps) >= 1.0
