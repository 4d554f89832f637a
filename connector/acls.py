"""Least-privilege Kafka ACLs per component, declared as data in this one place.

The same grants become Strimzi KafkaUsers (`connector.manifests`) and are applied to the
local secured broker in the tests (`apply`, Kafka's CreateAcls request), so a grant the
code needs and this list lacks fails a test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    for_code,
)
from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

from connector import groups
from connector.errors import KafkaAccessError
from connector.settings import Settings
from connector.topics import TopicNames

Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefix"]
COMPONENTS: Final = ("receiver", "poller", "worker", "operator", "reconciler")
CHANGELOG_TABLE: Final = "calls"


@dataclass(frozen=True)
class Grant:
    """Allow `operations` on one resource (a name, or every name with a prefix)."""

    resource: Resource
    name: str
    operations: tuple[str, ...]
    pattern: Pattern = "literal"


def _topics(names: Sequence[str], *operations: str) -> list[Grant]:
    return [Grant("topic", name, operations) for name in names]


def grants(settings: Settings, names: TopicNames | None = None) -> dict[str, tuple[Grant, ...]]:
    """What each component's user may do, and nothing more."""
    names = names or TopicNames.of(settings)
    app = groups.worker(settings)
    sources = (names.dr_raw, names.cdr_raw, names.observations)
    every_topic = (names.dr_raw, names.cdr_raw, names.call_events, names.dead_letter,
                   names.poller_state, names.observations, names.reconciliation)  # fmt: skip
    return {
        "receiver": (*_topics((names.dr_raw, names.dead_letter), "Write", "Describe"),),
        "poller": (
            *_topics((names.cdr_raw,), "Write", "Describe"),
            *_topics((names.poller_state,), "Read", "Write", "Describe"),
            Grant("group", groups.poller(settings), ("Read", "Describe")),
        ),
        "worker": (
            *_topics(sources, "Read", "Describe"),
            *_topics((names.call_events, names.dead_letter), "Write", "Describe"),
            # Faust's own topics: the table's changelog and the leader-assignor topic.
            Grant(
                "topic",
                f"{app}-",
                ("Read", "Write", "Describe", "Create", "DescribeConfigs"),
                "prefix",
            ),
            Grant("group", app, ("Read", "Describe")),
        ),
        "operator": (
            # topics, replay, rebuild (--into a new topic), tail and redrive.
            *_topics(every_topic, "Read", "Write", "Describe", "Create", "DescribeConfigs"),
            Grant(
                "topic",
                f"{names.call_events}.",
                ("Read", "Write", "Describe", "Create", "DescribeConfigs"),
                "prefix",
            ),
            Grant("group", app, ("Describe",)),
            # a reconciliation rebuilt from a rebuilt call-event topic, beside the live one
            Grant(
                "topic",
                f"{names.reconciliation}.",
                ("Read", "Write", "Describe", "Create", "DescribeConfigs"),
                "prefix",
            ),
        ),
        "reconciler": (
            *_topics((names.call_events, names.poller_state), "Read", "Describe"),
            *_topics((names.reconciliation,), "Read", "Write", "Describe"),
            Grant("group", groups.reconciler(settings), ("Read", "Describe")),
        ),
    }


# Kafka's enums for CreateAcls (org.apache.kafka.common.acl, ...resource).
RESOURCE_TYPES: Final = {"topic": 2, "group": 3, "cluster": 4}
PATTERN_TYPES: Final = {"literal": 3, "prefix": 4}
OPERATIONS: Final = {"All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7,
                     "Describe": 8, "ClusterAction": 9, "DescribeConfigs": 10,
                     "AlterConfigs": 11, "IdempotentWrite": 12}  # fmt: skip
ALLOW: Final = 3


class CreateAclsResponse_v1(Response):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class CreateAclsRequest_v1(RequestStruct):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = CreateAclsResponse_v1
    SCHEMA = Schema(
        (
            "creations",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("resource_pattern_type", Int8),
                ("principal", String("utf-8")),
                ("host", String("utf-8")),
                ("operation", Int8),
                ("permission_type", Int8),
            ),
        ),
    )


class CreateAclsRequest(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


def creations(
    user: str, granted: Sequence[Grant]
) -> list[tuple[int, str, int, str, str, int, int]]:
    principal = f"User:{user}"
    return [
        (
            RESOURCE_TYPES[grant.resource],
            grant.name,
            PATTERN_TYPES[grant.pattern],
            principal,
            "*",
            OPERATIONS[operation],
            ALLOW,
        )
        for grant in granted
        for operation in grant.operations
    ]


async def apply(client: AIOKafkaAdminClient, user: str, granted: Sequence[Grant]) -> None:
    """Create the grants for `user` (needs a client with Alter on the cluster)."""
    request = CreateAclsRequest(creations(user, granted))
    response = await client._send_request(request)  # no public CreateAcls
    for error_code, message in response.results:
        if error_code:
            raise KafkaAccessError(
                f"cannot create ACLs for {user}: {message or for_code(error_code).__name__}"
            )


# What this client may do, as the broker tells it (KIP-430): Metadata v8 names the operations
# allowed on each topic, DescribeGroups v3 on each group. No ACL is read, so any user can ask.
NOT_REPORTED: Final = -(2**31)  # the broker did not say (no authorizer, or not asked)
UNKNOWN_TOPIC: Final = 3
TOPIC_DENIED: Final = 29
AUTHORIZATION_FAILED: Final = frozenset({29, 30, 31})


class MetadataResponse_v8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32),
                          ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        ("topics", Array(
            ("error_code", Int16), ("name", String("utf-8")), ("is_internal", Boolean),
            ("partitions", Array(
                ("error_code", Int16), ("partition_index", Int32), ("leader_id", Int32),
                ("leader_epoch", Int32), ("replica_nodes", Array(Int32)),
                ("isr_nodes", Array(Int32)), ("offline_replicas", Array(Int32)),
            )),
            ("topic_authorized_operations", Int32),
        )),
        ("cluster_authorized_operations", Int32),
    )  # fmt: skip


class MetadataRequest_v8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = MetadataResponse_v8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class AuthorizedMetadataRequest(Request[MetadataRequest_v8]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: Sequence[str] | None) -> None:
        self._topics = None if topics is None else list(topics)

    def build(self, request_struct_class: type[MetadataRequest_v8]) -> MetadataRequest_v8:
        return MetadataRequest_v8(self._topics, False, False, True)


@dataclass(frozen=True)
class Access:
    """A resource as this client finds it: whether it exists (None: it may not even ask),
    its partitions (topics), and the operations allowed on it (None: the broker did not say,
    as without an authorizer, where everything is allowed)."""

    exists: bool | None
    operations: frozenset[str] | None
    partitions: int = 0


def operations(bits: int) -> frozenset[str] | None:
    if bits == NOT_REPORTED:
        return None
    return frozenset(name for name, code in OPERATIONS.items() if bits & (1 << code))


async def topic_access(
    client: AIOKafkaAdminClient, topics: Sequence[str] | None
) -> dict[str, Access]:
    """Each of `topics` (None: every topic this client may see) as this client finds it."""
    response = await client._send_request(AuthorizedMetadataRequest(topics))  # v8 only here
    found: dict[str, Access] = {}
    for error_code, name, _internal, partitions, bits in response.topics:
        if error_code == TOPIC_DENIED:
            found[name] = Access(None, frozenset())
        elif error_code == UNKNOWN_TOPIC:
            found[name] = Access(False, operations(bits))
        else:
            found[name] = Access(True, operations(bits), len(partitions))
    return found


class DescribeGroupsRequest_v3(RequestStruct):  # type: ignore[misc]
    """aiokafka 0.14.0's own v3 reads its answer as v2, dropping the authorized operations."""

    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class AuthorizedGroupsRequest(Request[DescribeGroupsRequest_v3]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, group: str) -> None:
        self._group = group

    def build(
        self, request_struct_class: type[DescribeGroupsRequest_v3]
    ) -> DescribeGroupsRequest_v3:
        return DescribeGroupsRequest_v3([self._group], True)


async def group_access(client: AIOKafkaAdminClient, group: str, patience: float = 15.0) -> Access:
    """`group` as this client finds it; a coordinator not elected yet (the offsets topic is
    made at the first ask) is waited for, within `patience` seconds."""
    give_up = asyncio.get_running_loop().time() + patience
    while True:
        try:
            coordinator = await client.find_coordinator(group)
            described = await client._send_request(AuthorizedGroupsRequest(group), coordinator)
            break
        except GroupAuthorizationFailedError:
            return Access(None, frozenset())
        except GroupCoordinatorNotAvailableError:
            if asyncio.get_running_loop().time() > give_up:
                raise
            await asyncio.sleep(0.5)
    for error_code, name, state, *_rest, bits in described.groups:
        if name == group and error_code in AUTHORIZATION_FAILED:
            return Access(None, frozenset())
        if name == group:
            return Access(state != "Dead", operations(bits))
    return Access(None, None)


def lacking(grant: Grant, access: Access) -> tuple[str, ...]:
    """The operations of `grant` this client was not given (none when the broker does not say)."""
    if access.operations is None:
        return ()
    return tuple(operation for operation in grant.operations if operation not in access.operations)
