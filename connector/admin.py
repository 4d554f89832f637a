"""Reads and creates topics on the broker; the decisions live in connector.topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from connector import clients
from connector.errors import TopicError
from connector.settings import Settings
from connector.topics import ExistingTopic, Plan, TopicSpec, plan

log = logging.getLogger(__name__)

UNKNOWN_TOPIC = 3
TOPIC_ALREADY_EXISTS = 36
AUTHORIZATION_FAILED = frozenset({29, 30, 31})


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(**clients.options(settings, request_timeout_ms=15000))
    try:
        await client.start()
    except KafkaError as exc:
        await client.close()
        await clients.check(settings)
        where = settings.kafka_bootstrap_servers
        raise TopicError(f"cannot reach Kafka at {where}: {exc}") from exc
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def running(consumer: AIOKafkaConsumer) -> AsyncIterator[AIOKafkaConsumer]:
    """`consumer` started, and stopped afterwards even when it could not start."""
    try:
        await consumer.start()
    except BaseException:
        await stop(consumer)
        raise
    try:
        yield consumer
    finally:
        await stop(consumer)


async def stop(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, carried to its end. aiokafka's fetcher, closing, cancels a fetch
    waiting out its retry backoff (a connection the broker just closed) and re-raises that
    cancellation as its own (aio-libs/aiokafka#647): the stop ended there, the other fetch
    tasks and the connections left open. Then they are closed here; a cancellation of our
    own task still propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        for pending in list(consumer._fetcher._pending_tasks):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await consumer._client.close()


async def describe(client: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, ExistingTopic]:
    """The topics among `names` that exist, with their partitions, replicas and configs."""
    found: dict[str, tuple[int, int]] = {}
    for topic in await client.describe_topics(list(names)):
        if topic["error_code"] == UNKNOWN_TOPIC:
            continue
        _raise_for(topic["error_code"], topic["topic"])
        partitions = topic["partitions"]
        replicas = max((len(p["replicas"]) for p in partitions), default=0)
        found[topic["topic"]] = (len(partitions), replicas)
    if not found:
        return {}
    configs = await _configs(client, list(found))
    return {
        name: ExistingTopic(name, partitions, replicas, configs[name])
        for name, (partitions, replicas) in found.items()
        if name in configs  # else not yet known to the broker asked for configs
    }


async def _configs(client: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    result: dict[str, dict[str, str]] = {}
    for response in await client.describe_configs(resources):
        for error_code, _message, _type, name, entries in _resources(response):
            if error_code == UNKNOWN_TOPIC:  # just created: another broker knows it already
                continue
            _raise_for(error_code, name)
            result[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return result


def _resources(response: Any) -> list[tuple[int, str, int, str, list[tuple[Any, ...]]]]:
    return [tuple(resource) for resource in response.resources]


def _raise_for(error_code: int, topic: str) -> None:
    if error_code in AUTHORIZATION_FAILED:
        raise for_code(error_code)(topic)
    if error_code:
        raise TopicError(f"{topic}: {for_code(error_code).__name__} (code {error_code})")


@dataclass(frozen=True)
class Applied:
    plan: Plan
    created: tuple[str, ...]


async def ensure(client: AIOKafkaAdminClient, declared: Sequence[TopicSpec]) -> Applied:
    """Create what is missing; leave what exists alone and report how it drifted."""
    existing = await describe(client, [spec.name for spec in declared])
    wanted = plan(declared, existing)
    created: list[str] = []
    if wanted.create:
        response = await client.create_topics(
            [
                NewTopic(
                    spec.name,
                    spec.partitions,
                    spec.replication_factor,
                    topic_configs=dict(spec.config),
                )
                for spec in wanted.create
            ]
        )
        for name, error_code, *rest in response.topic_errors:
            if error_code == TOPIC_ALREADY_EXISTS:
                continue
            if error_code:
                detail = rest[0] if rest and rest[0] else for_code(error_code).__name__
                raise TopicError(f"cannot create {name}: {detail}")
            created.append(name)
    if created:
        wanted = await _settled(client, declared, created)
    return Applied(wanted, tuple(created))


async def _settled(
    client: AIOKafkaAdminClient, declared: Sequence[TopicSpec], created: list[str]
) -> Plan:
    """Describe again once every created topic is visible in the broker's metadata."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        existing = await describe(client, [spec.name for spec in declared])
        if all(name in existing for name in created) or loop.time() > deadline:
            return plan(declared, existing)
        await asyncio.sleep(0.1)


async def converge(
    settings: Settings, declared: Sequence[TopicSpec], *, create: bool = True
) -> Applied:
    """Connect, then `ensure` the declared topics, or only report how they differ."""
    async with admin_client(settings) as client:
        with clients.refusals(settings):
            if create:
                return await ensure(client, declared)
            existing = await describe(client, [spec.name for spec in declared])
        return Applied(plan(declared, existing), ())


async def record_counts(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Records each topic holds now (end offsets less start offsets, over its partitions)."""
    consumer = AIOKafkaConsumer(**clients.options(settings, request_timeout_ms=5000))
    try:
        await consumer.start()
        partitions = [tp for topic in topics for tp in await partitions_of(consumer, topic)]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
    except KafkaError as exc:
        await clients.check(settings)
        where = settings.kafka_bootstrap_servers
        raise TopicError(f"cannot reach Kafka at {where}: {exc}") from exc
    finally:
        await stop(consumer)
    counts = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        counts[tp.topic] += end - starts[tp]
    return counts


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions from fresh metadata (an unsubscribed consumer has none)."""
    await consumer._client.force_metadata_update()
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def partition_counts(settings: Settings, names: Sequence[str]) -> dict[str, int]:
    """The partitions of each topic of `names` that exists."""
    async with admin_client(settings) as client:
        topics = await client.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] != UNKNOWN_TOPIC}


async def await_topics(settings: Settings, names: Sequence[str], poll_seconds: float = 5.0) -> None:
    """Return once every topic of `names` exists; until then warn, naming the missing ones.
    (Faust never subscribes again to a source topic missing when it started.)"""
    while True:
        try:
            async with admin_client(settings) as client:
                topics = await client.describe_topics(list(names))
            absent = sorted(t["topic"] for t in topics if t["error_code"] == UNKNOWN_TOPIC)
            if not absent:
                return
            log.warning(
                "waiting for topics to be created (not ready until then)",
                extra={"missing_topics": absent},
            )
        except TopicError as exc:
            log.warning("waiting for Kafka", extra={"error": str(exc)})
        await asyncio.sleep(poll_seconds)
