"""`tail` prints call events as JSON lines, filtered by call or message."""

from __future__ import annotations

import io

import orjson
from aiokafka import AIOKafkaProducer

from connector import admin
from connector.settings import Settings
from connector.tail import matcher, render, tail
from connector.topics import TopicNames, declare


def test_matcher_filters_by_call_and_message() -> None:
    event = {"call_id": "c1", "message_id": "m1"}
    assert matcher(None, None)(event)
    assert matcher("c1", None)(event)
    assert matcher(None, "m1")(event)
    assert not matcher("c2", None)(event)
    assert not matcher("c1", "m2")(event)


def test_render_is_one_line_unless_pretty() -> None:
    event = {"call_id": "c1", "billing": {"cost": "0.10"}}
    assert render(event, pretty=False) == '{"call_id":"c1","billing":{"cost":"0.10"}}'
    assert render(event, pretty=True).count("\n") == 5


async def test_tail_prints_the_events_of_one_message_from_the_beginning(
    settings: Settings, topic_names: TopicNames
) -> None:
    await admin.converge(settings, declare(settings, topic_names))
    async with AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
        for number in range(5):
            event = {"call_id": f"c{number}", "message_id": f"m{number % 2}", "revision": 1}
            key = f"c{number}".encode()
            await producer.send_and_wait(topic_names.call_events, orjson.dumps(event), key=key)
    out = io.StringIO()
    printed = await tail(
        settings, topic_names.call_events, from_beginning=True,
        wanted=matcher(None, "m1"), out=out, limit=2,
    )  # fmt: skip
    assert printed == 2
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(event["call_id"] for event in lines) == ["c1", "c3"]
