"""The sandbox plays NXCloud: seeded traffic, documented limits, DR pushes once."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from connector import admin
from connector.clock import provider_time, utcnow
from connector.dr import validate
from connector.local import sandbox
from connector.receiver.app import create_app, edge
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, serving

ORIGIN = utcnow() - timedelta(hours=1)


def test_a_seed_gives_the_same_calls_every_time() -> None:
    one, same, other = (sandbox.World(s, ORIGIN, 1.0) for s in (5, 5, 6))
    assert [one.calls(m) for m in range(50)] == [same.calls(m) for m in range(50)]
    assert [one.calls(m) for m in range(50)] != [other.calls(m) for m in range(50)]


def test_the_traffic_has_every_kind_of_call() -> None:
    calls = [call for m in range(400) for call in sandbox.World(5, ORIGIN, 1.0).calls(m)]
    assert {c.service for c in calls} == {"group_call", "verification", "notification"}
    assert {c.connected for c in calls} == {True, False}
    assert {c.language for c in calls} == {"en", "zh"}
    assert any(c.record_url for c in calls)
    assert any(c.ivr_result for c in calls)
    messages: dict[int, int] = {}
    for call in calls:
        messages[call.messageid] = messages.get(call.messageid, 0) + 1
    assert max(messages.values()) > 1


def test_drs_are_pushed_in_the_order_calls_end_from_the_calls_in_progress() -> None:
    """`up` shows merged events within its first minute: the first DRs are those of the calls
    in progress at start, not of the next message's calls once all of them have ended."""
    world = sandbox.World(5, ORIGIN, 1.0)
    since = ORIGIN + timedelta(minutes=30)
    endings = list(itertools.islice(world.endings(since), 600))
    ends = [call.ended_at for call in endings]
    assert ends == sorted(ends)
    assert ends[0] >= since
    assert ends[0] - since < timedelta(seconds=10)
    assert endings[0].started_at < since  # in progress at start
    window = (since, since + timedelta(minutes=2))
    expected = [
        c for m in range(6000) for c in world.calls(m) if window[0] <= c.ended_at < window[1]
    ]
    pushed = [call for call in endings if call.ended_at < window[1]]
    assert sorted(pushed, key=lambda c: (c.message, c.leg)) == sorted(
        expected, key=lambda c: (c.message, c.leg))  # each call once, none missed  # fmt: skip


def test_every_generated_dr_is_valid_as_the_provider_documents() -> None:
    world = sandbox.World(5, ORIGIN, 1.0)
    for message in range(200):
        for call in world.calls(message):
            validate(call.dr_fields(ZoneInfo("Asia/Shanghai")))


def ask(stand_in: sandbox.Sandbox, **change: str) -> tuple[int, dict[str, Any]]:
    now = utcnow()
    form = {
        "appkey": "sandbox",
        "secretkey": "sandbox",
        "voiceType": "0",
        "start_time": provider_time(now - timedelta(hours=2), stand_in.zone),
        "end_time": provider_time(now, stand_in.zone),
        "page": "1",
        "page_size": "10",
        **change,
    }
    status, body, _ = stand_in.answer(form)
    stand_in._last_request.clear()
    assert isinstance(body, dict)
    return status, body


def test_the_documented_limits_answer_code_0() -> None:
    stand_in = sandbox.Sandbox(sandbox.World(5, ORIGIN, 1.0))
    now = utcnow()
    zone = stand_in.zone
    status, body = ask(stand_in)
    assert (status, body["code"]) == (200, "1")
    assert body["info"]["total"] > 10
    assert isinstance(body["info"]["rows"][0]["id"], int)
    assert isinstance(body["info"]["rows"][0]["customer_price"], float)
    too_long = provider_time(now - timedelta(hours=25), zone)
    assert ask(stand_in, start_time=too_long)[1]["code"] == "0"
    too_old = provider_time(now - timedelta(days=8), zone)
    ends_old = provider_time(now - timedelta(days=7, hours=23), zone)
    assert ask(stand_in, start_time=too_old, end_time=ends_old)[1]["code"] == "0"
    assert ask(stand_in, secretkey="wrong")[1]["msg"] == "appkey or secretkey error"
    stand_in.answer({"appkey": "sandbox", "secretkey": "sandbox"})
    _, hurried, _ = stand_in.answer({"appkey": "sandbox", "secretkey": "sandbox"})
    assert isinstance(hurried, dict)
    assert hurried["msg"].startswith("request too frequent")


async def test_each_call_is_pushed_once_to_the_receiver_as_form_data(
    settings: Settings, topic_names: TopicNames, tmp_path: Path
) -> None:
    receiver_settings = dataclasses.replace(settings, spool_dir=tmp_path / "spool")
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, topic_names))
    world = sandbox.World(seed=3, origin=utcnow() - timedelta(seconds=2), rate=4.0, max_seconds=1)
    async with serving(
        create_app(receiver_settings, topic_names), edge(receiver_settings)
    ) as receiver_url:
        stand_in = sandbox.Sandbox(world, push_to=receiver_url + "/nxcloud/voice/dr")
        async with serving(sandbox.create_app(stand_in)):
            values = await read_topic(
                settings.kafka_bootstrap_servers, topic_names.dr_raw, lambda v: len(v) >= 20
            )
    assert all(v["content_type"] == "application/x-www-form-urlencoded" for v in values)
    identities = [(v["fields"]["messageid"], v["fields"]["phone"]) for v in values]
    assert len(identities) == len(set(identities))
    for value in values:
        calls = world.calls(int(value["fields"]["messageid"]) - 700000)
        pushed = [c.dr_fields(stand_in.zone) for c in calls]
        assert value["fields"] in pushed


def test_some_pushes_are_lost_and_some_rows_unlisted_as_the_seed_decides() -> None:
    world = sandbox.World(5, ORIGIN, 1.0)
    calls = [call for m in range(2000) for call in world.calls(m)]
    gaps = sandbox.Sandbox(world, lost_pushes=0.03, unlisted=0.02)
    lost = [c for c in calls if not gaps.pushes(c)]
    unlisted = [c for c in calls if not gaps.lists(c)]
    assert 0.02 < len(lost) / len(calls) < 0.04
    assert 0.01 < len(unlisted) / len(calls) < 0.03
    assert not {c.cdr_id for c in lost} & {c.cdr_id for c in unlisted}  # one or the other
    again = sandbox.Sandbox(sandbox.World(5, ORIGIN, 1.0), lost_pushes=0.03, unlisted=0.02)
    assert [again.pushes(c) for c in calls] == [gaps.pushes(c) for c in calls]
    plain = sandbox.Sandbox(world)
    assert all(plain.pushes(c) and plain.lists(c) for c in calls)
    form = {"appkey": "sandbox", "secretkey": "sandbox", "voiceType": "0", "page": "1",
            "page_size": "1000", "start_time": provider_time(ORIGIN, gaps.zone),
            "end_time": provider_time(ORIGIN + timedelta(minutes=5), gaps.zone)}  # fmt: skip
    status, body, _ = gaps.answer(form)
    assert (status, isinstance(body, dict)) == (200, True), body
    listed = {row["id"] for row in body["info"]["rows"]}  # type: ignore[call-overload]
    status, body, _ = plain.answer(form)
    everything = {row["id"] for row in body["info"]["rows"]}  # type: ignore[call-overload]
    assert len(everything) < 1000  # one page
    assert listed < everything
    assert everything - listed == {c.cdr_id for c in unlisted if c.cdr_id in everything}
