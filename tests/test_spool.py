import asyncio
import resource
import struct
import zlib
from pathlib import Path

import pytest

from connector.errors import SpoolError
from connector.frames import HEADER, Damage, Entry, Frames, encode
from connector.receiver.spool import Spool


def decoded(data: bytes, chunk: int = 7) -> list[Entry | Damage]:
    frames = Frames(1)
    items: list[Entry | Damage] = []
    for at in range(0, len(data), chunk):
        items.extend(frames.feed(data[at : at + chunk]))
    tail = frames.finish()
    return items + ([tail] if tail else [])


def test_frames_round_trip_across_chunk_boundaries() -> None:
    data = encode("t", b"k", b"v1") + encode("t", None, b"v2") + encode("t", b"", b"")
    items = decoded(data)
    assert [(e.topic, e.key, e.value) for e in items if isinstance(e, Entry)] == [
        ("t", b"k", b"v1"),
        ("t", None, b"v2"),
        ("t", b"", b""),
    ]
    assert items[-1].end == len(data)


def test_a_flipped_byte_costs_that_frame_only() -> None:
    frames = [encode("t", None, f"value-{i}".encode() * 20) for i in range(5)]
    for where in (3, HEADER.size - 2, HEADER.size + 30):  # magic, header checksum, body
        data = bytearray(b"".join(frames))
        at = sum(map(len, frames[:2])) + where
        data[at] ^= 0x40
        items = decoded(bytes(data), chunk=64)
        values = [e.value[:7] for e in items if isinstance(e, Entry)]
        assert values == [b"value-0", b"value-1", b"value-3", b"value-4"], where
        (damage,) = [d for d in items if isinstance(d, Damage)]
        start = sum(map(len, frames[:2]))
        assert (damage.start, damage.end) == (start, start + len(frames[2]))


def test_garbage_between_frames_is_one_damaged_span() -> None:
    data = encode("t", None, b"a") + b"\x00NXS" * 40 + encode("t", None, b"b")
    items = decoded(data, chunk=5)
    assert [type(i).__name__ for i in items] == ["Entry", "Damage", "Entry"]
    assert isinstance(items[1], Damage)
    assert items[1].size == 160


async def test_appends_survive_reopening_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=200)
    spool.open()
    await asyncio.gather(*(spool.append("t", None, f"v{i}".encode()) for i in range(50)))
    for i in range(50, 60):
        await spool.append("t", None, f"v{i}".encode())
    assert len(list((tmp_path / "segments").glob("*.seg"))) > 2
    reopened = Spool(tmp_path, 1 << 20, segment_bytes=200)
    reopened.open()
    assert reopened.depth == 60
    batch = await reopened.read(100)
    assert [e.value for e in batch.entries] == [f"v{i}".encode() for i in range(60)]


async def test_a_torn_tail_on_disk_is_quarantined_and_cut_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await spool.append("t", b"k", b"whole")
    (segment,) = (tmp_path / "segments").glob("*.seg")
    with segment.open("ab") as log:
        log.write(encode("t", b"k", b"torn")[:20])
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    assert [e.value for e in await reopened.oldest(10)] == [b"whole"]
    assert [p.stat().st_size for p in (tmp_path / "quarantine").iterdir()] == [20]
    await reopened.append("t", b"k", b"next")
    assert [e.value for e in await reopened.oldest(10)] == [b"whole", b"next"]


async def test_draining_is_a_stream_that_frees_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=100)
    spool.open()
    for i in range(20):
        await spool.append("t", None, bytes([i]) * 20)
    first = await spool.read(5)
    second = await spool.read(5)
    assert [e.value[0] for e in first.entries + second.entries] == list(range(10))
    await spool.acknowledge(first)
    await spool.acknowledge(second)
    segments = len(list((tmp_path / "segments").glob("*.seg")))
    reopened = Spool(tmp_path, 1 << 20, segment_bytes=100)
    reopened.open()
    assert reopened.depth == 10
    rest = await reopened.read(100)
    assert [e.value[0] for e in rest.entries] == list(range(10, 20))
    assert segments < 20 // 2
    await reopened.acknowledge(rest)
    assert reopened.empty()
    assert [p.stat().st_size for p in (tmp_path / "segments").glob("*.seg")] == [0]


async def test_a_flipped_byte_in_the_middle_of_a_spool_is_quarantined(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    for i in range(9):
        await spool.append("t", None, f"record-{i}".encode())
    (segment,) = (tmp_path / "segments").glob("*.seg")
    data = bytearray(segment.read_bytes())
    frame = len(encode("t", None, b"record-0"))
    data[4 * frame + HEADER.size + 5] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    assert reopened.depth == 8
    batch = await reopened.read(100)
    assert [e.value for e in batch.entries] == [f"record-{i}".encode() for i in range(9) if i != 4]
    (damage,) = batch.damage
    assert damage.kept is not None
    assert damage.kept.read_bytes() == bytes(data[4 * frame : 5 * frame])
    await reopened.acknowledge(batch)
    assert reopened.empty()


async def test_reading_a_large_spool_keeps_memory_flat(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 30, segment_bytes=4 << 20)
    spool.open()
    value = b"x" * 4000
    for _ in range(20):
        await asyncio.gather(*(spool.append("t", None, value) for _ in range(500)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reopened = Spool(tmp_path, 1 << 30, segment_bytes=4 << 20)
    reopened.open()
    drained = 0
    while (batch := await reopened.read(500, 1 << 20)).entries:
        drained += len(batch.entries)
        await reopened.acknowledge(batch)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert drained == 10_000
    assert grown_kib < 20 << 10, f"peak RSS grew by {grown_kib} KiB reading a 40 MB spool"


async def test_a_full_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 80)
    spool.open()
    await spool.append("t", None, b"x" * 10)
    with pytest.raises(SpoolError, match="full"):
        await spool.append("t", None, b"x" * 60)


async def test_a_failing_disk_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "gone", 1 << 20)
    spool.open()
    (segment,) = (tmp_path / "gone" / "segments").glob("*.seg")
    segment.unlink()
    segment.mkdir()
    with pytest.raises(SpoolError, match="spool write failed"):
        await spool.append("t", None, b"x")


async def test_what_the_single_file_spool_left_undrained_is_taken_over(tmp_path: Path) -> None:
    def legacy(value: bytes) -> bytes:
        body = encode("t", None, value)[HEADER.size :]
        return struct.pack(">II", len(body), zlib.crc32(body)) + body

    drained = legacy(b"old-0")
    (tmp_path / "spool.log").write_bytes(drained + legacy(b"old-1") + legacy(b"old-2"))
    (tmp_path / "spool.drained").write_text(str(len(drained)))
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    await spool.append("t", None, b"new")
    assert spool.depth == 3
    assert [e.value for e in await spool.oldest(10)] == [b"old-1", b"old-2", b"new"]
    assert not (tmp_path / "spool.log").exists()
