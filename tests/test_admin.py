"""Topics against the real broker."""

import asyncio
import dataclasses
import os
import subprocess
import sys

from aiokafka import AIOKafkaConsumer

from connector import admin, clients
from connector.settings import Settings
from connector.topics import DAY_MS, TopicNames, declare


async def test_ensure_creates_every_declared_topic_with_its_config(
    settings: Settings, topic_names: TopicNames
) -> None:
    declared = declare(settings, topic_names)
    async with admin.admin_client(settings) as client:
        first = await admin.ensure(client, declared)
        second = await admin.ensure(client, declared)
        existing = await admin.describe(client, [spec.name for spec in declared])

    assert sorted(first.created) == sorted(spec.name for spec in declared)
    assert first.plan.drift == ()
    assert second.created == ()
    assert sorted(second.plan.matching) == sorted(spec.name for spec in declared)
    for spec in declared:
        actual = existing[spec.name]
        assert actual.partitions == spec.partitions
        for key, value in spec.config.items():
            assert actual.config[key] == value
    assert existing[topic_names.call_events].config["cleanup.policy"] == "compact,delete"


async def test_the_topics_command_gives_the_call_event_topic_its_retention(
    settings: Settings, topic_names: TopicNames
) -> None:
    suffix = topic_names.call_events.rsplit(".", 1)[-1]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
        "NXCLOUD_CALL_EVENT_RETENTION_DAYS": "45",
    }
    created = await asyncio.to_thread(topics_command, env)
    assert f"created  {topic_names.call_events}" in created.stdout, created
    async with admin.admin_client(settings) as client:
        existing = await admin.describe(client, [topic_names.call_events])
    config = existing[topic_names.call_events].config
    assert config["retention.ms"] == str(45 * DAY_MS)
    assert config["cleanup.policy"] == "compact,delete"
    longer = await asyncio.to_thread(
        topics_command, {**env, "NXCLOUD_CALL_EVENT_RETENTION_DAYS": "60"}, "--check"
    )
    assert longer.returncode == 1
    assert (
        f"drift    {topic_names.call_events}: retention.ms is {45 * DAY_MS}, "
        f"declared {60 * DAY_MS}" in longer.stdout
    )


def topics_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", "topics", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def test_drift_is_reported_and_nothing_is_changed(
    settings: Settings, topic_names: TopicNames
) -> None:
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, topic_names))
        wider = dataclasses.replace(settings, topic_partitions=4, raw_retention_days=31)
        drifted = await admin.ensure(client, declare(wider, topic_names))
        after = await admin.describe(client, [topic_names.dr_raw])

    settings_drifted = {(d.topic, d.setting) for d in drifted.plan.drift}
    assert (topic_names.dr_raw, "partitions") in settings_drifted
    assert (topic_names.dr_raw, "retention.ms") in settings_drifted
    assert drifted.created == ()
    assert after[topic_names.dr_raw].partitions == 3


async def test_a_consumer_stops_in_full_when_its_fetcher_breaks_off_at_a_fetch_in_backoff(
    settings: Settings,
) -> None:
    """aio-libs/aiokafka#647: the fetcher's close re-raises the cancellation of a fetch that
    waits out its retry backoff (the broker had just closed its connection: a
    re-authentication, a restart), which ended a poller's stop with CancelledError and left
    its connections open."""
    consumer = AIOKafkaConsumer(**clients.options(settings))
    await consumer.start()
    await consumer.topics()  # a connection to the broker
    backoffs = {asyncio.create_task(asyncio.sleep(60)) for _ in range(2)}
    consumer._fetcher._pending_tasks.update(backoffs)
    await admin.stop(consumer)
    assert all(task.cancelled() for task in backoffs)
    assert all(not connection.connected() for connection in consumer._client._conns.values())
