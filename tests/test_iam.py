"""Amazon MSK IAM: a token signed with fixed test credentials (no AWS reachable), and each
component's IAM policy granting exactly what its KafkaUser grants."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from connector import clients, iam, manifests
from connector.oauth import TokenError
from connector.settings import Settings

CLUSTER = "arn:aws:kafka:eu-west-1:123456789012:cluster/prod/0a1b2c3d-4e5f"
ACCESS_KEY = "AKIDEXAMPLETEST12345"


@pytest.fixture
def fixed_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def decoded(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


async def test_an_msk_token_is_a_presigned_kafka_cluster_connect_url(
    fixed_credentials: None,
) -> None:
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
         "KAFKA_AWS_REGION": "eu-west-1"}
    )  # fmt: skip
    options = clients.security(settings)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    before = time.time()
    token = await provider.token()
    assert await provider.token() == token  # kept: signed once
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)  # base64url, no padding
    url = urlsplit(decoded(token))
    assert (url.scheme, url.netloc, url.path) == ("https", "kafka.eu-west-1.amazonaws.com", "/")
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key, day, region, service, kind = query["X-Amz-Credential"].split("/")
    assert (key, region, service, kind) == (ACCESS_KEY, "eu-west-1", "kafka-cluster",
                                             "aws4_request")  # fmt: skip
    assert re.fullmatch(r"\d{8}", day)
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert query["User-Agent"].startswith("aws-msk-iam-sasl-signer-python/")
    assert "EXAMPLEKEY" not in decoded(token)
    _, expiry_ms = iam.signer("eu-west-1")()
    assert before + 800 < expiry_ms / 1000 < time.time() + 1000


async def test_no_credentials_is_one_line_naming_where_they_come_from(
    fixed_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = iam.MskIamTokenProvider(iam.signer("eu-west-1"))
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert str(caught.value).startswith("cannot sign an MSK IAM token (")
    assert "KAFKA_AWS_PROFILE" in str(caught.value)


# What each IAM action allows, in Kafka ACL terms (MSK's "IAM access control" table).
IMPLIES = {
    "kafka-cluster:ReadData": ("topic", "Read"),
    "kafka-cluster:WriteData": ("topic", "Write"),
    "kafka-cluster:DescribeTopic": ("topic", "Describe"),
    "kafka-cluster:CreateTopic": ("topic", "Create"),
    "kafka-cluster:DescribeTopicDynamicConfiguration": ("topic", "DescribeConfigs"),
    "kafka-cluster:AlterGroup": ("group", "Read"),
    "kafka-cluster:DescribeGroup": ("group", "Describe"),
}


def test_each_policy_grants_exactly_what_the_kafkauser_grants() -> None:
    settings = Settings.from_env({})
    out = io.StringIO()
    with redirect_stdout(out):
        assert manifests.main(["--iam", CLUSTER]) == 0
    policies = json.loads(out.getvalue())
    users = {user["metadata"]["name"]: user for user in manifests.kafka_users(settings, "c")}
    assert set(policies) == set(users)
    topic, group = (CLUSTER.replace(":cluster/", f":{kind}/") + "/" for kind in ("topic", "group"))
    for name, user in users.items():
        granted = set()
        for rule in user["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            base = topic if resource["type"] == "topic" else group
            arn = base + resource["name"] + ("*" if resource["patternType"] == "prefix" else "")
            granted |= {(arn, resource["type"], op) for op in rule["operations"]}
        allowed, cluster_actions = set(), set()
        for statement in policies[name]["Statement"]:
            assert statement["Effect"] == "Allow"
            (arn,) = statement["Resource"]
            if arn == CLUSTER:
                cluster_actions |= set(statement["Action"])
                continue
            allowed |= {(arn, *IMPLIES[action]) for action in statement["Action"]}
        assert allowed == granted, name
        writes = any(op == "Write" for _, _, op in granted)
        assert cluster_actions == {"kafka-cluster:Connect"} | (
            {"kafka-cluster:WriteDataIdempotently"} if writes else set()
        )


def test_a_cluster_arn_is_checked() -> None:
    with pytest.raises(Exception, match="not an MSK cluster ARN"):
        iam.arns("arn:aws:kafka:eu-west-1:1:topic/x")
