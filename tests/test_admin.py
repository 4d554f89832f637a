"""Topics against the real broker."""

import dataclasses

from connector import admin
from connector.settings import Settings
from connector.topics import TopicNames, declare


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
    assert existing[topic_names.call_events].config["cleanup.policy"] == "compact"


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
