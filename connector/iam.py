"""Amazon MSK IAM: the OAUTHBEARER token AWS's signer library makes, and each component's
least-privilege IAM policy, from the same access map that makes the KafkaUsers.

With IAM, MSK ignores Kafka ACLs: what a client may do is its IAM role's policy. `policy`
turns `connector.acls.grants` into one, action for operation, on the exact topic and group
ARNs (a prefix grant: the prefix and `*`), plus `kafka-cluster:Connect` and, for a
component that writes, `WriteDataIdempotently` (the producers are idempotent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiokafka.abc import AbstractTokenProvider

from connector.acls import Grant
from connector.errors import ConfigError
from connector.oauth import TokenError

REFRESH_AT: Final = 0.8

# Kafka ACL operation -> the MSK IAM actions that allow it (docs: "IAM access control").
ACTIONS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("topic", "Read"): ("kafka-cluster:ReadData", "kafka-cluster:DescribeTopic"),
    ("topic", "Write"): ("kafka-cluster:WriteData", "kafka-cluster:DescribeTopic"),
    ("topic", "Describe"): ("kafka-cluster:DescribeTopic",),
    ("topic", "Create"): ("kafka-cluster:CreateTopic",),
    ("topic", "Delete"): ("kafka-cluster:DeleteTopic",),
    ("topic", "Alter"): ("kafka-cluster:AlterTopic",),
    ("topic", "DescribeConfigs"): ("kafka-cluster:DescribeTopicDynamicConfiguration",),
    ("topic", "AlterConfigs"): ("kafka-cluster:AlterTopicDynamicConfiguration",),
    ("group", "Read"): ("kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"),
    ("group", "Describe"): ("kafka-cluster:DescribeGroup",),
    ("group", "Delete"): ("kafka-cluster:DeleteGroup",),
}


def arns(cluster_arn: str) -> tuple[str, str]:
    """The topic and group ARN prefixes of a cluster ARN
    (arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/UUID)."""
    head, sep, rest = cluster_arn.partition(":cluster/")
    if not sep or not head.startswith("arn:") or rest.count("/") != 1:
        raise ConfigError(f"not an MSK cluster ARN: {cluster_arn!r}")
    return f"{head}:topic/{rest}/", f"{head}:group/{rest}/"


def policy(grants: Iterable[Grant], cluster_arn: str) -> dict[str, Any]:
    """The IAM policy document granting exactly `grants` on this cluster."""
    topic_arn, group_arn = arns(cluster_arn)
    cluster_actions = ["kafka-cluster:Connect"]
    by_resource: dict[str, set[str]] = {}
    for grant in grants:
        if grant.resource == "cluster":
            raise ConfigError("cluster grants have no per-resource IAM form")
        base = topic_arn if grant.resource == "topic" else group_arn
        arn = base + grant.name + ("*" if grant.pattern == "prefix" else "")
        for operation in grant.operations:
            by_resource.setdefault(arn, set()).update(ACTIONS[(grant.resource, operation)])
            if (grant.resource, operation) == ("topic", "Write"):
                cluster_actions = ["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"]
    statements = [{"Effect": "Allow", "Action": cluster_actions, "Resource": [cluster_arn]}]
    statements += [
        {"Effect": "Allow", "Action": sorted(actions), "Resource": [arn]}
        for arn, actions in by_resource.items()
    ]
    return {"Version": "2012-10-17", "Statement": statements}


Sign = Callable[[], tuple[str, int]]


def signer(region: str, profile: str | None = None) -> Sign:
    """AWS's signer: credentials the usual ways (IRSA or pod identity, the environment, a
    profile); returns (token, expiry in epoch ms)."""
    try:
        from aws_msk_iam_sasl_signer import (  # type: ignore[import-untyped]  # optional
            MSKAuthTokenProvider,
        )
    except ImportError:
        raise ConfigError(
            "KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs AWS's signer: "
            "pip install 'nxcloud-connector[msk-iam]'"
        ) from None
    if profile:
        return lambda: MSKAuthTokenProvider.generate_auth_token_from_profile(region, profile)
    return lambda: MSKAuthTokenProvider.generate_auth_token(region)


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """A signed MSK token, kept until 80% of its life (15 minutes) has passed."""

    def __init__(self, sign: Sign, clock: Callable[[], float] = time.time) -> None:
        self._sign = sign
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0

    async def token(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._refresh_at:
            try:
                token, expiry_ms = await asyncio.to_thread(self._sign)
            except Exception as exc:  # botocore's NoCredentialsError and kin
                raise TokenError(
                    f"cannot sign an MSK IAM token ({type(exc).__name__}): check the pod's "
                    "IAM role (IRSA or pod identity), AWS_* variables or KAFKA_AWS_PROFILE"
                ) from None
            self._token = token
            self._refresh_at = now + REFRESH_AT * max(0.0, expiry_ms / 1000 - now)
        return self._token
