"""Least-privilege Kafka ACLs per component, declared as data in this one place.

The same grants become Strimzi KafkaUsers (`connector.manifests`) and are applied to the
local secured broker in the tests (`apply`, Kafka's CreateAcls request), so a grant the
code needs and this list lacks fails a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int8, Int16, Int32, Schema, String

from connector.errors import KafkaAccessError
from connector.records import group_id
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


def poller_group(settings: Settings) -> str:
    return f"nxcloud-poller.{settings.account}"


def reconciler_group(settings: Settings) -> str:
    """The reconcilers' election: the member that holds the reconciliation topic's one
    partition writes (`connector.reconciler`)."""
    suffix = f".{settings.topic_suffix}" if settings.topic_suffix else ""
    return f"nxcloud-reconciler{suffix}"


def grants(settings: Settings, names: TopicNames | None = None) -> dict[str, tuple[Grant, ...]]:
    """What each component's user may do, and nothing more."""
    names = names or TopicNames.of(settings)
    app = group_id(settings)
    sources = (names.dr_raw, names.cdr_raw, names.observations)
    every_topic = (names.dr_raw, names.cdr_raw, names.call_events, names.dead_letter,
                   names.poller_state, names.observations, names.reconciliation)  # fmt: skip
    return {
        "receiver": (*_topics((names.dr_raw, names.dead_letter), "Write", "Describe"),),
        "poller": (
            *_topics((names.cdr_raw,), "Write", "Describe"),
            *_topics((names.poller_state,), "Read", "Write", "Describe"),
            Grant("group", poller_group(settings), ("Read", "Describe")),
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
            Grant("group", reconciler_group(settings), ("Read", "Describe")),
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
