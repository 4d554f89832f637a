"""`nxcloud-connector check`: the configuration tried against each dependency for real, one
line per check saying what was found or what to fix. Nothing is written anywhere: topics are
read (Metadata, DescribeConfigs), the ACLs are what the broker says this user may do (KIP-430,
connector.acls), the registry is asked for each subject's schema, NXCloud for one page of one
row.

Which dependencies a component needs decides what is checked for it; `all` checks every one.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from connector import acls, admin, cdr, clients, registry
from connector.errors import ConfigError, ConnectorError, RegistryUnreachable
from connector.settings import Settings
from connector.topics import ExistingTopic, TopicNames, TopicSpec, declare, drift_of

Verdict = Literal["ok", "FAIL", "skip"]
COMPONENTS: Final = ("receiver", "poller", "worker", "operator", "reconciler", "all")
CERTIFICATE_WARNING: Final = timedelta(days=14)


@dataclass(frozen=True)
class Checked:
    verdict: Verdict
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.verdict:<5} {self.what}: {self.detail}"


def ok(what: str, detail: str) -> Checked:
    return Checked("ok", what, detail)


def fail(what: str, detail: str) -> Checked:
    return Checked("FAIL", what, detail)


def skip(what: str, detail: str) -> Checked:
    return Checked("skip", what, detail)


def passed(results: Iterable[Checked]) -> bool:
    return all(result.verdict != "FAIL" for result in results)


def grants_of(settings: Settings, component: str, names: TopicNames) -> tuple[acls.Grant, ...]:
    granted = acls.grants(settings, names)
    if component == "all":
        return tuple(dict.fromkeys(grant for each in granted.values() for grant in each))
    return granted[component]


def topics_of(settings: Settings, component: str, names: TopicNames) -> tuple[TopicSpec, ...]:
    """The declared topics a component reads or writes (the operator and `all`: every one)."""
    declared = declare(settings, names)
    if component in ("operator", "all"):
        return declared
    used = {
        grant.name
        for grant in grants_of(settings, component, names)
        if grant.resource == "topic" and grant.pattern == "literal"
    }
    return tuple(spec for spec in declared if spec.name in used)


def topic_verdict(spec: TopicSpec, access: acls.Access, existing: ExistingTopic | None) -> Checked:
    """One declared topic as found: there, with its partitions and, where this user may
    read them, its configs."""
    what = f"topic {spec.name}"
    if access.exists is None:
        return fail(what, "this user may not even Describe it: grant it (connector/acls.py)")
    if not access.exists:
        return fail(what, "missing: create it with `nxcloud-connector topics` (the operator)")
    if existing is None:
        if access.partitions != spec.partitions:
            return fail(what, f"{access.partitions} partitions, declared {spec.partitions}")
        return ok(
            what,
            f"{access.partitions} partitions; configs not read (no DescribeConfigs "
            "for this user: `topics --check` as the operator reads them)",
        )
    drift = drift_of(spec, existing)
    if drift:
        return fail(
            what,
            "; ".join(f"{d.setting} is {d.actual}, declared {d.declared}" for d in drift)
            + " (see `topics --check`)",
        )
    return ok(
        what,
        f"{existing.partitions} partitions, replication {existing.replication_factor},"
        " configs as declared",
    )


def grant_verdict(grant: acls.Grant, access: acls.Access, user: str) -> Checked:
    what = f"ACL {grant.resource} {grant.name}{'*' if grant.pattern == 'prefix' else ''}"
    if access.operations is None:
        return skip(
            what,
            "the broker does not say what this user may do (no ACL authorizer, "
            "or IAM: python -m connector.manifests --iam)",
        )
    lacking = acls.lacking(grant, access)
    if lacking:
        return fail(
            what,
            f"{user} may not {', '.join(lacking)}: grant it (connector/acls.py, "
            "deploy/base/users.yaml)",
        )
    return ok(what, ", ".join(grant.operations))


async def run(settings: Settings, component: str, now: datetime) -> list[Checked]:
    """Every check that applies to `component`, in order; a Kafka that cannot be reached
    or refuses the login ends the Kafka checks there."""
    names = TopicNames.of(settings)
    results = await kafka(settings, component, names)
    results.append(await schema_registry(settings, names))
    if component in ("receiver", "all"):
        results.append(push_tls(settings, now))
    if component in ("poller", "all"):
        results.append(await nxcloud(settings, now))
    return results


async def kafka(settings: Settings, component: str, names: TopicNames) -> list[Checked]:
    where = settings.kafka_bootstrap_servers
    host, _, port = where.split(",")[0].rpartition(":")
    try:
        async with asyncio.timeout(10):
            _reader, writer = await asyncio.open_connection(host, int(port))
        writer.close()
    except (OSError, TimeoutError) as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return [fail("Kafka reachable", f"{where}: {reason} (see KAFKA_BOOTSTRAP_SERVERS)")]
    results = [ok("Kafka reachable", where)]
    refusal = await clients.diagnose(settings)
    if refusal is not None:
        return [*results, fail("Kafka login", refusal)]
    mechanism = settings.kafka_sasl_mechanism or (
        "mutual TLS" if settings.kafka_ssl_cert_file else "none (PLAINTEXT)"
    )
    who = f" as {settings.kafka_sasl_username}" if settings.kafka_sasl_username else ""
    results.append(ok("Kafka login", f"{settings.kafka_security_protocol}, {mechanism}{who}"))
    try:
        async with admin.admin_client(settings) as client:
            results += await topics(client, settings, component, names)
            results += await grants(client, settings, component, names)
    except (KafkaError, ConnectorError) as exc:
        results.append(fail("Kafka", clients.explain(exc, settings) or settings.scrub(str(exc))))
    return results


async def topics(
    client: AIOKafkaAdminClient, settings: Settings, component: str, names: TopicNames
) -> list[Checked]:
    specs = topics_of(settings, component, names)
    found = await acls.topic_access(client, [spec.name for spec in specs])
    readable = [
        s.name for s in specs if found[s.name].exists and _may(found[s.name], "DescribeConfigs")
    ]
    existing = await admin.describe(client, readable) if readable else {}
    return [topic_verdict(spec, found[spec.name], existing.get(spec.name)) for spec in specs]


def _may(access: acls.Access, operation: str) -> bool:
    return access.operations is None or operation in access.operations


async def grants(
    client: AIOKafkaAdminClient, settings: Settings, component: str, names: TopicNames
) -> list[Checked]:
    user = f"user {settings.kafka_sasl_username!r}" if settings.kafka_sasl_username else "this user"
    wanted = grants_of(settings, component, names)
    literal = [g.name for g in wanted if g.resource == "topic" and g.pattern == "literal"]
    found = await acls.topic_access(client, literal)
    visible = (
        await acls.topic_access(client, None) if any(g.pattern == "prefix" for g in wanted) else {}
    )
    results = []
    for grant in wanted:
        if grant.resource == "group":
            results.append(grant_verdict(grant, await acls.group_access(client, grant.name), user))
        elif grant.pattern == "literal":
            results.append(grant_verdict(grant, found[grant.name], user))
        else:
            results += _prefixed(grant, visible, user)
    return results


def _prefixed(grant: acls.Grant, visible: dict[str, acls.Access], user: str) -> list[Checked]:
    matching = sorted(name for name in visible if name.startswith(grant.name))
    if not matching:
        return [skip(f"ACL topic {grant.name}*", "no such topic yet (made at first use)")]
    return [
        grant_verdict(acls.Grant("topic", name, grant.operations), visible[name], user)
        for name in matching
    ]


async def schema_registry(settings: Settings, names: TopicNames) -> Checked:
    what = "schema registry"
    if settings.registry_url is None:
        return skip(what, "not configured (NXCLOUD_REGISTRY_URL)")
    found: list[str] = []
    try:
        async with registry.Registry(settings) as client:
            for subject, shipped in registry.contracts(names).items():
                done = await client.lookup(subject, registry.registered_form(shipped))
                found.append(f"{subject} id {done.id}")
    except RegistryUnreachable as exc:
        return fail(what, settings.scrub(str(exc)))
    return ok(what, "; ".join(found))


def push_tls(settings: Settings, now: datetime) -> Checked:
    what = "push port TLS"
    cert_file, key_file = settings.receiver_tls_cert_file, settings.receiver_tls_key_file
    if cert_file is None or key_file is None:
        return skip(what, "plain HTTP (NXCLOUD_RECEIVER_TLS_CERT_FILE unset)")
    from connector.receiver.tls import server_context

    try:
        server_context(cert_file, key_file)
    except ConfigError as exc:
        return fail(what, str(exc))
    until = certificate_end(cert_file)
    if until <= now:
        return fail(what, f"{cert_file} expired at {until:%Y-%m-%d %H:%M}Z: renew it")
    days = (until - now).days
    if until - now < CERTIFICATE_WARNING:
        return fail(what, f"{cert_file} expires in {days} days ({until:%Y-%m-%d}): renew it")
    return ok(what, f"{cert_file} and its key load; valid until {until:%Y-%m-%d} ({days} days)")


def certificate_end(cert_file: object) -> datetime:
    """The first certificate's notAfter, read as the ssl module reads a peer's."""
    decoded = ssl._ssl._test_decode_cert(str(cert_file))  # type: ignore[attr-defined]
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), UTC)


async def nxcloud(settings: Settings, now: datetime) -> Checked:
    """One page of one row of the last minute, as the poller asks it: the credentials and
    the egress IP's place on the provider's allow-list, in one request."""
    what = "NXCloud CDR API"
    if settings.nxcloud_appkey is None or settings.nxcloud_secretkey is None:
        return skip(what, "no credentials (NXCLOUD_APPKEY, NXCLOUD_SECRETKEY)")
    appkey, secretkey = settings.credentials()
    window = cdr.Window(0, now - timedelta(minutes=1), now)
    form = cdr.query_form(
        window,
        1,
        1,
        appkey=appkey.reveal(),
        secretkey=secretkey.reveal(),
        zone=settings.nxcloud_timezone,
    )
    timeout = settings.poller_http_timeout_seconds
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(settings.nxcloud_cdr_url, data=form)
        answer = cdr.parse_answer(response.content) if response.status_code == 200 else None
    except httpx.HTTPError as exc:
        return fail(what, f"{settings.nxcloud_cdr_url}: {type(exc).__name__} (NXCLOUD_CDR_URL)")
    except ValueError as exc:  # Malformed is one
        return fail(what, f"{settings.nxcloud_cdr_url} answered no CDR JSON: {exc}")
    if answer is None:
        return fail(what, f"{settings.nxcloud_cdr_url} answered HTTP {response.status_code}")
    if isinstance(answer, cdr.Refusal):
        said = settings.scrub(answer.message)
        if answer.about_credentials:
            fix = "NXCLOUD_APPKEY, NXCLOUD_SECRETKEY, this host's egress IP on the allow-list"
            return fail(what, f"refused the credentials ({said}): check {fix}")
        return fail(what, f"refused the query: {said}")
    return ok(what, f"{settings.nxcloud_cdr_url} accepts the credentials")


def report(results: Sequence[Checked]) -> list[str]:
    return [str(result) for result in results]
