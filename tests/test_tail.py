"""`tail`: a line per call event on a terminal, JSON lines when piped, exactly `--limit`
events, the filters a support engineer needs, and a closed pipe ends it quietly."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import select
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connector import admin
from connector.settings import Settings
from connector.tail import header, line, matcher, render, tail
from connector.topics import TopicNames, declare

EVENT = {
    "call_id": "c1", "message_id": "m1", "revision": 3, "service": "group_call",
    "phone": "+8615088888888", "connected": True, "duration_seconds": 42,
    "started_at": "2026-12-06T02:00:01Z", "first_seen_at": "2026-12-06T02:00:50Z",
    "billing": {"cost": "0.036", "cost_final": True}, "sources": ["cdr", "dr"],
}  # fmt: skip


def test_matcher_filters_by_call_message_and_phone() -> None:
    assert matcher(None, None)(EVENT)
    assert matcher("c1", None)(EVENT)
    assert matcher(None, "m1")(EVENT)
    assert not matcher("c2", None)(EVENT)
    assert not matcher("c1", "m2")(EVENT)
    for phone in ("+8615088888888", "8615088888888", "+86 150 8888 8888"):
        assert matcher(None, None, phone)(EVENT), phone
    assert not matcher(None, None, "+8615088888889")(EVENT)
    assert not matcher(None, None, "15088888888")(EVENT)  # the country code is part of it


def test_a_line_says_when_what_how_and_what_it_cost() -> None:
    shown = line(EVENT)
    assert "\n" not in shown
    assert shown.split() == [
        "2026-12-06", "02:00:01Z", "group_call", "+8615088888888", "yes", "42", "s",
        "0.036", "final", "cdr+dr", "r3",
    ]  # fmt: skip
    for name in ("time (UTC)", "service", "phone", "connected", "duration", "cost", "sources"):
        assert name in header()
    cdr_only = {**EVENT, "connected": None, "duration_seconds": None, "started_at": None,
                "billing": {"cost": "0.04", "cost_final": False}, "sources": ["cdr"]}  # fmt: skip
    assert line(cdr_only).split() == [
        "2026-12-06", "02:00:50Z", "group_call", "+8615088888888", "unknown", "-",
        "0.04", "provisional", "cdr", "r3",
    ]  # fmt: skip


def test_render_is_a_json_line_or_the_terminal_line() -> None:
    assert orjson.loads(render(EVENT, as_json=True)) == EVENT
    assert "\n" not in render(EVENT, as_json=True)
    assert render(EVENT, as_json=False) == line(EVENT)


async def _events(settings: Settings, names: TopicNames, count: int, message: str = "m") -> None:
    async with AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
        for number in range(count):
            event = {**EVENT, "call_id": f"c{number}", "message_id": f"{message}{number % 2}"}
            key = f"c{number}".encode()
            await producer.send(names.call_events, orjson.dumps(event), key=key)


async def test_tail_prints_the_events_of_one_message_from_the_beginning(
    settings: Settings, topic_names: TopicNames
) -> None:
    await admin.converge(settings, declare(settings, topic_names))
    await _events(settings, topic_names, 5)
    out = io.StringIO()
    printed = await tail(
        settings, topic_names.call_events, from_beginning=True,
        wanted=matcher(None, "m1"), out=out, limit=2,
    )  # fmt: skip
    assert printed == 2
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(event["call_id"] for event in lines) == ["c1", "c3"]


def _env(settings: Settings, suffix: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "NXCLOUD_TOPIC_SUFFIX": suffix,
    }


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:10]


async def _topics_with_events(settings: Settings, suffix: str, count: int, message: str) -> None:
    names = TopicNames().with_suffix(suffix)
    await admin.converge(settings, declare(settings, names))
    await _events(settings, names, count, message)


def test_limit_prints_exactly_that_many_though_a_batch_holds_more(
    settings: Settings, suffix: str
) -> None:
    asyncio.run(_topics_with_events(settings, suffix, 300, "m"))
    for limit in (1, 7):
        done = subprocess.run(
            [sys.executable, "-m", "connector", "tail", "--from-beginning", f"--limit={limit}"],
            env=_env(settings, suffix), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == limit
        assert all(orjson.loads(each)["call_id"] for each in done.stdout.splitlines())


def test_a_closed_pipe_ends_tail_quietly(settings: Settings, suffix: str) -> None:
    """`tail | head -1`: once the reader has gone, the next event ends tail with status 0 and
    nothing on stderr (it used to blame Kafka for the pipe)."""
    asyncio.run(_topics_with_events(settings, suffix, 3, "m"))
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "tail", "--from-beginning"],
        env=_env(settings, suffix), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert orjson.loads(process.stdout.readline())["call_id"]
        process.stdout.close()
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            # Something to write to the closed pipe, until tail has tried.
            asyncio.run(_events(settings, TopicNames().with_suffix(suffix), 1))
            time.sleep(0.5)
        assert process.poll() == 0
        assert process.stderr is not None
        assert process.stderr.read() == b""
    finally:
        process.kill()
        process.wait()


def test_on_a_terminal_a_header_and_a_line_per_event(settings: Settings, suffix: str) -> None:
    asyncio.run(_topics_with_events(settings, suffix, 4, "t"))
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "tail", "--from-beginning", "--limit=2",
         "--phone=+8615088888888", "--message-id=t1"],
        env=_env(settings, suffix), stdout=secondary, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the other end closed: tail is done
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(primary)
    assert process.wait(timeout=60) == 0
    rows = shown.decode().replace("\r\n", "\n").splitlines()
    assert rows[0] == header()
    assert len(rows) == 3, rows
    for row in rows[1:]:
        assert row.split()[2:4] == ["group_call", "+8615088888888"]
        assert row.endswith("r3")
