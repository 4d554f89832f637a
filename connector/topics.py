"""Every topic the connector owns, declared as data, and the pure plan to reach it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from connector.settings import Settings

DAY_MS: Final = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicNames:
    """The public topic names; tests and sandboxes may derive isolated ones."""

    dr_raw: str = "nxcloud.voice.dr.raw"
    cdr_raw: str = "nxcloud.voice.cdr.raw"
    call_events: str = "nxcloud.voice.call-events"
    dead_letter: str = "nxcloud.voice.dead-letter"
    poller_state: str = "nxcloud.voice.poller-state"
    observations: str = "nxcloud.voice.observations"
    reconciliation: str = "nxcloud.voice.reconciliation"

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        names = cls()
        return names.with_suffix(settings.topic_suffix) if settings.topic_suffix else names

    def with_suffix(self, suffix: str) -> TopicNames:
        return TopicNames(
            dr_raw=f"{self.dr_raw}.{suffix}",
            cdr_raw=f"{self.cdr_raw}.{suffix}",
            call_events=f"{self.call_events}.{suffix}",
            dead_letter=f"{self.dead_letter}.{suffix}",
            poller_state=f"{self.poller_state}.{suffix}",
            observations=f"{self.observations}.{suffix}",
            reconciliation=f"{self.reconciliation}.{suffix}",
        )


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


def declare(settings: Settings, names: TopicNames | None = None) -> tuple[TopicSpec, ...]:
    """The topic contract: names, partitions, replication and the configs that matter."""
    names = names or TopicNames.of(settings)
    replication = settings.topic_replication_factor
    durable = {"min.insync.replicas": str(max(1, replication - 1))}
    raw = {
        **durable,
        "cleanup.policy": "delete",
        "retention.ms": str(settings.raw_retention_days * DAY_MS),
    }
    return (
        TopicSpec(
            names.dr_raw,
            settings.topic_partitions,
            replication,
            raw,
            "Every DR push exactly as received; replayable.",
        ),
        TopicSpec(
            names.cdr_raw,
            settings.topic_partitions,
            replication,
            raw,
            "Every CDR row as fetched, with the query it came from; replayable.",
        ),
        TopicSpec(
            names.call_events,
            settings.topic_partitions,
            replication,
            {
                **durable,
                "cleanup.policy": "compact,delete",
                "retention.ms": str(settings.call_event_retention_days * DAY_MS),
                "min.compaction.lag.ms": str(DAY_MS),
                "delete.retention.ms": str(DAY_MS),
            },
            "One merged event per call revision, keyed by call_id; the latest survives "
            "for NXCLOUD_CALL_EVENT_RETENTION_DAYS after the call last changed.",
        ),
        TopicSpec(
            names.dead_letter,
            1,
            replication,
            {
                **durable,
                "cleanup.policy": "delete",
                "retention.ms": str(settings.dead_letter_retention_days * DAY_MS),
            },
            "Input that could not be accepted or normalized, with the reason.",
        ),
        TopicSpec(
            names.poller_state,
            1,
            replication,
            {**durable, "cleanup.policy": "compact"},
            "The CDR poller's checkpoint per account; its one partition elects the active poller.",
        ),
        TopicSpec(
            names.observations,
            settings.topic_partitions,
            replication,
            {**durable, "cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "Internal: observations `replay` hands to the worker, keyed like the raw topics.",
        ),
        TopicSpec(
            names.reconciliation,
            1,
            replication,
            {**durable, "cleanup.policy": "compact"},
            "Per provider-local day, service and country: what NXCloud reported against what "
            "reached us; keyed by day|service|country_code. Its one partition elects the "
            "active reconciler.",
        ),
    )


@dataclass(frozen=True)
class ExistingTopic:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class Drift:
    topic: str
    setting: str
    declared: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, declared {self.declared}"


@dataclass(frozen=True)
class Plan:
    create: tuple[TopicSpec, ...]
    matching: tuple[str, ...]
    drift: tuple[Drift, ...]


def drift_of(spec: TopicSpec, actual: ExistingTopic) -> tuple[Drift, ...]:
    found: list[Drift] = []
    if actual.partitions != spec.partitions:
        found.append(Drift(spec.name, "partitions", str(spec.partitions), str(actual.partitions)))
    if actual.replication_factor != spec.replication_factor:
        found.append(
            Drift(
                spec.name,
                "replication factor",
                str(spec.replication_factor),
                str(actual.replication_factor),
            )
        )
    for key, value in sorted(spec.config.items()):
        have = actual.config.get(key)
        if have != value:
            found.append(Drift(spec.name, key, value, "unset" if have is None else have))
    return tuple(found)


def plan(declared: Iterable[TopicSpec], existing: Mapping[str, ExistingTopic]) -> Plan:
    create: list[TopicSpec] = []
    matching: list[str] = []
    drift: list[Drift] = []
    for spec in declared:
        actual = existing.get(spec.name)
        if actual is None:
            create.append(spec)
            continue
        found = drift_of(spec, actual)
        if found:
            drift.extend(found)
        else:
            matching.append(spec.name)
    return Plan(tuple(create), tuple(matching), tuple(drift))
