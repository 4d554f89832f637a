"""What a spool left on disk meets when the receiver starts: a record Kafka refuses, a
damaged frame, no room. Each costs only itself, and is reported."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from connector import admin, dr, identity
from connector.frames import HEADER, encode
from connector.local.broker import free_port
from connector.receiver.app import create_app
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.publisher import Publisher
from connector.receiver.spool import Batch, Spool
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic, serving
from tests.support import EXAMPLE_FIELDS, gauge

SMALL_LIMIT = 8192


def record(messageid: str, padding: int = 0) -> tuple[bytes, bytes]:
    fields = {**EXAMPLE_FIELDS, "messageid": messageid}
    if padding:
        fields["ivr_result"] = "p" * padding
    arrival = dr.Arrival(uuid.uuid4().hex, datetime.now(UTC), "192.0.2.1", "r", "POST", "")
    return identity.dr_key(fields), dr.raw_record(fields, arrival)


async def prepared(kafka_bootstrap: str, tmp_path: Path) -> tuple[Settings, TopicNames]:
    """Topics of their own; the raw topic takes records of at most SMALL_LIMIT bytes."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_partitions=3,
        topic_suffix=suffix,
        spool_dir=tmp_path / "spool",
    )
    names = TopicNames.of(settings)
    specs = [
        dataclasses.replace(s, config={**s.config, "max.message.bytes": str(SMALL_LIMIT)})
        if s.name == names.dr_raw
        else s
        for s in declare(settings, names)
    ]
    await admin.converge(settings, specs)
    return settings, names


def contents(path: str) -> bytes:
    return Path(path).read_bytes()


async def drained(http: httpx.AsyncClient) -> str:
    async with asyncio.timeout(60):
        while True:
            metrics = (await http.get("/metrics")).text
            if gauge(metrics, "nxcloud_receiver_spool_depth") == 0:
                return metrics
            await asyncio.sleep(0.1)


async def test_a_record_too_large_for_kafka_is_dead_lettered_and_the_rest_arrive(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, names = await prepared(kafka_bootstrap, tmp_path)
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    spool.open()
    for i in range(200):
        await spool.append(names.dr_raw, *record(f"m{i}", padding=20_000 if i == 50 else 0))
    async with serving(create_app(settings, names)) as url, httpx.AsyncClient(base_url=url) as h:
        metrics = await drained(h)
        big = await h.post(
            "/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": "big", "x": "y" * 30_000}
        )
        after = await h.post("/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": "after"})
        metrics = await drained(h)
    assert (big.text, after.text) == ("success", "success")
    wanted = {f"m{i}" for i in range(200) if i != 50} | {"after"}
    raw = await read_topic(
        kafka_bootstrap, names.dr_raw, lambda v: wanted <= {r["fields"]["messageid"] for r in v}
    )
    assert {r["fields"]["messageid"] for r in raw} == wanted
    letters = await read_topic(kafka_bootstrap, names.dead_letter, lambda v: len(v) >= 2)
    assert {(d["source"], d["reason"].split(":")[0]) for d in letters} == {
        ("spool", "MessageSizeTooLargeError")
    }
    assert len(letters) == 2
    for letter in letters:
        frame = contents(letter["kept"])
        assert frame.startswith(encode(names.dr_raw, None, b"")[:4])
        assert letter["value_bytes"] > SMALL_LIMIT
    assert 'nxcloud_receiver_dead_lettered_total{error="MessageSizeTooLargeError"} 2.0' in metrics


async def test_a_flipped_byte_mid_spool_loses_that_record_only_and_is_reported(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, names = await prepared(kafka_bootstrap, tmp_path)
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    spool.open()
    frames = [record(f"c{i}") for i in range(100)]
    for key, value in frames:
        await spool.append(names.dr_raw, key, value)
    (segment,) = (settings.spool_dir / "segments").glob("*.seg")
    data = bytearray(segment.read_bytes())
    start = sum(len(encode(names.dr_raw, k, v)) for k, v in frames[:40])
    data[start + HEADER.size + 60] ^= 0x01
    segment.write_bytes(bytes(data))
    async with serving(create_app(settings, names)) as url, httpx.AsyncClient(base_url=url) as h:
        metrics = await drained(h)
    wanted = {f"c{i}" for i in range(100) if i != 40}
    raw = await read_topic(
        kafka_bootstrap, names.dr_raw, lambda v: wanted <= {r["fields"]["messageid"] for r in v}
    )
    assert {r["fields"]["messageid"] for r in raw} == wanted
    (letter,) = await read_topic(kafka_bootstrap, names.dead_letter, lambda v: len(v) >= 1)
    size = len(encode(names.dr_raw, *frames[40]))
    assert letter["reason"] == f"corrupt spool frame: {size} bytes at offset {start} of segment 1"
    assert contents(letter["kept"]) == bytes(data[start : start + size])
    assert gauge(metrics, "nxcloud_receiver_spool_corrupt_frames_total") == 1


async def test_a_full_spool_makes_readyz_fail_and_says_why(tmp_path: Path) -> None:
    unreachable = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        spool_dir=tmp_path / "spool",
        spool_max_bytes=6000,
        receiver_kafka_timeout_ms=200,
    )
    async with serving(create_app(unreachable)) as url, httpx.AsyncClient(base_url=url) as http:
        before = await http.get("/readyz")
        answers = [
            (await http.post("/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": f"f{i}"}))
            for i in range(12)
        ]
        after = await http.get("/readyz")
    assert (before.status_code, before.text) == (200, "ready")
    assert answers[-1].status_code == 503
    assert after.status_code == 503
    assert after.text.startswith("not ready: the spool is full: ")


class UnreadableSpool(Spool):
    """A spool whose disk fails on reading (appends still work)."""

    async def read(self, limit: int, max_bytes: int = 8 << 20) -> Batch:
        raise OSError(5, "Input/output error")


async def test_a_spool_that_cannot_drain_makes_readyz_fail_and_says_why(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, names = await prepared(kafka_bootstrap, tmp_path)
    left = Spool(settings.spool_dir, settings.spool_max_bytes)
    left.open()
    await left.append(names.dr_raw, *record("w1"))
    spool = UnreadableSpool(settings.spool_dir, settings.spool_max_bytes)
    publisher = Publisher(
        kafka_bootstrap, spool, 1.0, ReceiverMetrics(), dead_letter_topic=names.dead_letter
    )
    async with publisher:
        async with asyncio.timeout(30):
            while True:
                state = await publisher.readiness()
                if not state.ok:
                    break
                await asyncio.sleep(0.05)
    assert state.reason == "the spool cannot drain: OSError: [Errno 5] Input/output error"
