import asyncio
from pathlib import Path

import pytest

from connector.errors import SpoolError
from connector.spool import Spool, decode, encode


def test_frames_round_trip_and_a_torn_tail_is_ignored() -> None:
    data = encode("t", b"k", b"v1") + encode("t", None, b"v2")
    entries = list(decode(data + encode("t", b"k", b"v3")[:-1]))
    assert [(e.topic, e.key, e.value) for e in entries] == [("t", b"k", b"v1"), ("t", None, b"v2")]
    assert entries[-1].end == len(data)


async def test_appends_survive_reopening_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await asyncio.gather(*(spool.append("t", None, f"v{i}".encode()) for i in range(50)))
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    entries = await reopened.oldest(100)
    assert [e.value for e in entries] == [f"v{i}".encode() for i in range(50)]
    assert reopened.depth == 50


async def test_a_torn_tail_on_disk_is_dropped_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await spool.append("t", b"k", b"whole")
    with (tmp_path / "spool.log").open("ab") as log:
        log.write(encode("t", b"k", b"torn")[:7])
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    assert [e.value for e in await reopened.oldest(10)] == [b"whole"]
    await reopened.append("t", b"k", b"next")
    assert [e.value for e in await reopened.oldest(10)] == [b"whole", b"next"]


async def test_draining_advances_durably_and_an_empty_spool_is_truncated(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    for i in range(5):
        await spool.append("t", None, bytes([i]))
    first = await spool.oldest(2)
    await spool.mark_drained(first[-1], 2)
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    rest = await reopened.oldest(10)
    assert [e.value for e in rest] == [bytes([2]), bytes([3]), bytes([4])]
    await reopened.mark_drained(rest[-1], 3)
    assert reopened.empty()
    assert (tmp_path / "spool.log").stat().st_size == 0


async def test_a_full_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 64)
    spool.open()
    await spool.append("t", None, b"x" * 10)
    with pytest.raises(SpoolError, match="full"):
        await spool.append("t", None, b"x" * 60)


async def test_a_failing_disk_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "gone", 1 << 20)
    spool.open()
    (tmp_path / "gone" / "spool.log").mkdir()
    with pytest.raises(SpoolError, match="spool write failed"):
        await spool.append("t", None, b"x")
