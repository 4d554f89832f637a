"""The secured local broker as the tests use it: users, their settings, their ACLs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connector import acls, admin, clients
from connector.local.broker import BrokerConfig, LocalKafka, free_port
from connector.local.security import Security
from connector.settings import Settings
from connector.topics import TopicNames, declare

SUFFIX = "secure"


@dataclass(frozen=True)
class SecureKafka:
    # "stranger" has no grant; "partial" the worker's, less Write on the call-event topic.
    USERS: ClassVar[tuple[str, ...]] = (*acls.COMPONENTS, "stranger", "partial")

    local: LocalKafka
    security: Security

    def settings(self, user: str, **overrides: Any) -> Settings:
        """`user`'s settings over SASL_SSL, on this module's topics (suffix `secure`)."""
        return replace(Settings.from_env(self.env(user)), **overrides)

    def env(self, user: str) -> dict[str, str]:
        return {**self.security.sasl_env(user), "NXCLOUD_TOPIC_SUFFIX": SUFFIX,
                "NXCLOUD_ACCOUNT": SUFFIX, "NXCLOUD_TOPIC_PARTITIONS": "3"}  # fmt: skip

    @property
    def names(self) -> TopicNames:
        return TopicNames().with_suffix(SUFFIX)


def grant_everyone(secure: SecureKafka) -> None:
    """The ACLs of connector.acls for each component's user, as an administrator; then the
    topics, created by the operator as `nxcloud-connector topics` would."""

    async def grant() -> None:
        superuser = secure.settings("admin")
        granted = acls.grants(superuser, secure.names)
        events = secure.names.call_events
        granted["partial"] = (
            *(grant for grant in granted["worker"] if grant.name != events),
            acls.Grant("topic", events, ("Describe",)),
        )
        async with admin.admin_client(superuser) as client:
            for user, grants in granted.items():
                await acls.apply(client, user, grants)
        for user in granted:
            await _until_granted(secure.settings(user))
        operator = secure.settings("operator")
        await admin.converge(operator, declare(operator, secure.names))

    asyncio.run(grant())


async def _until_granted(settings: Settings, deadline: float = 30.0) -> None:
    """ACLs reach the broker through the metadata log: wait until an idempotent producer
    (which needs Write on some topic) may start."""
    give_up = time.monotonic() + deadline
    while True:
        producer = AIOKafkaProducer(**clients.options(settings, enable_idempotence=True))
        try:
            await producer.start()
            return
        except KafkaError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.2)
        finally:
            await producer.stop()


@contextmanager
def started_secure_kafka(data: Path, **options: Any) -> Iterator[SecureKafka]:
    """A secured local broker in `data`, with every component's user and grants;
    `options` go to its Security (re-authentication, an OAuth listener)."""
    security = Security(data / "tls", free_port(), free_port(), SecureKafka.USERS, **options)
    config = BrokerConfig(
        data_dir=data, port=free_port(), controller_port=free_port(), security=security
    )
    with LocalKafka(config) as local:
        secure = SecureKafka(local, security)
        grant_everyone(secure)
        yield secure
