from connector.settings import Settings
from connector.topics import DAY_MS, ExistingTopic, TopicNames, declare, plan


def existing_as_declared(settings: Settings) -> dict[str, ExistingTopic]:
    return {
        spec.name: ExistingTopic(
            spec.name,
            spec.partitions,
            spec.replication_factor,
            {**spec.config, "segment.bytes": "1073741824"},
        )
        for spec in declare(settings)
    }


def test_the_public_topic_names_are_fixed() -> None:
    names = [spec.name for spec in declare(Settings())]
    assert names == [
        "nxcloud.voice.dr.raw",
        "nxcloud.voice.cdr.raw",
        "nxcloud.voice.call-events",
        "nxcloud.voice.dead-letter",
        "nxcloud.voice.poller-state",
        "nxcloud.voice.observations",
        "nxcloud.voice.reconciliation",
    ]


def test_call_events_are_compacted_and_raw_topics_are_replayable_for_30_days() -> None:
    specs = {spec.name: spec for spec in declare(Settings())}
    assert specs["nxcloud.voice.call-events"].config["cleanup.policy"] == "compact,delete"
    for raw in ("nxcloud.voice.dr.raw", "nxcloud.voice.cdr.raw"):
        assert specs[raw].config["cleanup.policy"] == "delete"
        assert int(specs[raw].config["retention.ms"]) >= 30 * DAY_MS


def test_retention_and_partitions_follow_the_settings() -> None:
    specs = declare(Settings(raw_retention_days=45, topic_partitions=12))
    assert specs[0].partitions == 12
    assert specs[0].config["retention.ms"] == str(45 * DAY_MS)


def test_a_calls_latest_revision_is_kept_as_long_as_the_setting_says() -> None:
    events = declare(Settings())[2]
    assert events.config["retention.ms"] == str(90 * DAY_MS)
    events = declare(Settings(call_event_retention_days=400))[2]
    assert events.name == "nxcloud.voice.call-events"
    assert events.config["retention.ms"] == str(400 * DAY_MS)
    assert events.config["min.compaction.lag.ms"] == str(DAY_MS)


def test_min_insync_replicas_leaves_one_replica_of_slack() -> None:
    assert declare(Settings(topic_replication_factor=3))[0].config["min.insync.replicas"] == "2"
    assert declare(Settings(topic_replication_factor=1))[0].config["min.insync.replicas"] == "1"


def test_isolated_names_keep_the_public_prefix() -> None:
    names = TopicNames().with_suffix("abc")
    assert names.dr_raw == "nxcloud.voice.dr.raw.abc"
    assert names.dead_letter == "nxcloud.voice.dead-letter.abc"


def test_missing_topics_are_planned_for_creation() -> None:
    result = plan(declare(Settings()), {})
    assert [spec.name for spec in result.create] == [spec.name for spec in declare(Settings())]
    assert result.drift == ()


def test_topics_as_declared_need_nothing_even_with_extra_configs() -> None:
    settings = Settings()
    result = plan(declare(settings), existing_as_declared(settings))
    assert result.create == ()
    assert result.drift == ()
    assert len(result.matching) == 7


def test_partition_count_and_config_drift_are_reported() -> None:
    settings = Settings()
    existing = existing_as_declared(settings)
    events = existing["nxcloud.voice.call-events"]
    existing[events.name] = ExistingTopic(
        events.name, 2, events.replication_factor, {**events.config, "cleanup.policy": "delete"}
    )
    raw = existing["nxcloud.voice.dr.raw"]
    existing[raw.name] = ExistingTopic(raw.name, raw.partitions, 3, {})
    drift = {
        (d.topic, d.setting): (d.declared, d.actual)
        for d in plan(declare(settings), existing).drift
    }
    assert drift[("nxcloud.voice.call-events", "partitions")] == ("6", "2")
    assert drift[("nxcloud.voice.call-events", "cleanup.policy")] == ("compact,delete", "delete")
    assert drift[("nxcloud.voice.dr.raw", "replication factor")] == ("1", "3")
    assert drift[("nxcloud.voice.dr.raw", "retention.ms")] == (str(30 * DAY_MS), "unset")


def test_the_reconciliation_is_compacted_on_one_partition_that_elects_the_reconciler() -> None:
    (spec,) = [spec for spec in declare(Settings()) if spec.name.endswith("reconciliation")]
    assert (spec.partitions, spec.config["cleanup.policy"]) == (1, "compact")
    assert TopicNames().with_suffix("x").reconciliation == "nxcloud.voice.reconciliation.x"
