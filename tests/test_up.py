"""`nxcloud-connector up` runs Kafka, the receiver, the sandbox and the poller locally."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from connector import admin
from connector.broker import free_port
from connector.settings import Settings
from tests.kafka_helpers import read_topic
from tests.test_cli import read_until
from tests.test_receiver import EXAMPLE_FIELDS, PROVIDER_EXAMPLE


def start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    """`up` as a user starts it, once it says it is running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "up"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        read_until(process, "Running.", time.monotonic() + 120)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


async def test_up_stores_a_push_on_the_raw_topic_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "XDG_DATA_HOME": str(tmp_path),
        "NXCLOUD_RECEIVER_PORT": str(port),
        "NXCLOUD_RECEIVER_HOST": "127.0.0.1",
    }
    process = start_up(env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 30
            while (await http.get("/readyz")).text != "ready":
                assert time.monotonic() < deadline
            fields = {**EXAMPLE_FIELDS, "messageid": "up-1"}
            response = await http.post("/nxcloud/voice/dr", data=fields)
        assert (response.status_code, response.text) == (200, "success")
        raw = PROVIDER_EXAMPLE.replace(EXAMPLE_FIELDS["messageid"], "up-raw").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /nxcloud/voice/dr?%s HTTP/1.1\r\nHost: x\r\n\r\n" % raw)
        async with asyncio.timeout(15):
            reply = await reader.readuntil(b"success")
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200 ")
        records = await read_topic(
            "127.0.0.1:9092",
            "nxcloud.voice.dr.raw",
            lambda values: {"up-1", "up-raw"} <= {v["fields"]["messageid"] for v in values},
        )
        assert next(v for v in records if v["fields"]["messageid"] == "up-1")["fields"] == fields
        spaced = next(v for v in records if v["fields"]["messageid"] == "up-raw")["fields"]
        assert spaced == {**EXAMPLE_FIELDS, "messageid": "up-raw"}
        polled = await read_topic(
            "127.0.0.1:9092", "nxcloud.voice.cdr.raw", lambda values: len(values) >= 1, deadline=90
        )
        assert polled[0]["account"] == "default"
        events = await read_topic(
            "127.0.0.1:9092",
            "nxcloud.voice.call-events",
            lambda values: any(v["message_id"] == "up-1" for v in values),
            deadline=120,
        )
        assert next(v for v in events if v["message_id"] == "up-1")["sources"] == ["dr"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_up_interrupted_and_started_again_loses_no_pushed_dr(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {"XDG_DATA_HOME": str(tmp_path), "NXCLOUD_RECEIVER_HOST": "127.0.0.1"}

    def received(values: list[Any]) -> set[tuple[str, str]]:
        return {(v["fields"]["messageid"], v["fields"]["phone"]) for v in values}

    def merged(values: list[Any]) -> set[tuple[str, str]]:
        return {(v["message_id"], v["phone_raw"]) for v in values if "dr" in v["sources"]}

    process = start_up(env)
    try:
        await read_topic(
            "127.0.0.1:9092", "nxcloud.voice.call-events",
            lambda values: len(merged(values)) >= 3, deadline=240,
        )  # fmt: skip
        process.send_signal(signal.SIGINT)  # mid-stream: the sandbox keeps pushing until then
        assert process.wait(timeout=120) == 0
        process = start_up(env)
        stored = (await admin.record_counts(Settings(), ["nxcloud.voice.dr.raw"]))[
            "nxcloud.voice.dr.raw"
        ]
        pushed = received(
            await read_topic("127.0.0.1:9092", "nxcloud.voice.dr.raw", lambda v: len(v) >= stored)
        )
        assert len(pushed) >= 3
        seen: list[Any] = []

        def all_merged(values: list[Any]) -> bool:
            seen[:] = values
            return merged(values) >= pushed

        try:
            await read_topic(
                "127.0.0.1:9092", "nxcloud.voice.call-events", all_merged, deadline=180
            )
        except AssertionError:
            missing = pushed - merged(seen)
            ids = {message for message, _phone in missing}
            related = [(v["message_id"], v["phone_raw"], v["sources"], v["revision"])
                       for v in seen if v["message_id"] in ids]  # fmt: skip
            message = f"{len(missing)} DRs without an event: {missing}; {related}"
            raise AssertionError(message) from None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
