"""The reconciler's work per call event, without Kafka: CPU seconds to take a batch of
call events into the groups (each call's old part out, its new one in), store the parts,
the groups and the offsets in one write batch, and judge the changed groups' records.

The events are what the worker writes for N sandbox calls (a provisional CDR row, the DR,
the settled row: three revisions each), in batches of 2,000 as the reconciler reads them.
Each store (memory, RocksDB) runs twice, alternating (A B B A), in one process; the figure
is events per CPU second of this process, which resists the load of other work better than
wall-clock time. It also prints the CPU per observation of the worker's pure merge path
(state decoded, merged, encoded, the event dumped), which `reports` made longer.
Run: `python -m bench.reconciler [--calls 50000]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from connector import normalize
from connector import reconciliation as rec
from connector.local import sandbox
from connector.merge import CallState, merge
from connector.reconciler.loop import Reconciler
from connector.reconciler.store import MemoryStore, RocksStore, Store
from connector.settings import Settings
from connector.topics import TopicNames

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
BATCH = 2000


def events(calls: int) -> list[bytes]:
    world = sandbox.World(seed=8, origin=T0, rate=2.0)
    found: list[bytes] = []
    message = 0
    while len(found) < 3 * calls:
        for call in world.calls(message):
            service = 0 if call.service == "group_call" else 1
            state: CallState | None = None
            for observation, at in (
                (normalize.from_cdr(call.cdr_row(ZONE, False), service, ZONE),
                 call.ended_at + timedelta(minutes=5)),
                (normalize.from_dr(call.dr_fields(ZONE), ZONE), call.ended_at),
                (normalize.from_cdr(call.cdr_row(ZONE, True), service, ZONE),
                 call.ended_at + timedelta(minutes=30)),
            ):  # fmt: skip
                state, event = merge(state, observation, at)
                if event is not None:
                    found.append(orjson.dumps(event))
        message += 1
    return found


def run(values: list[bytes], store: Store) -> float:
    """Events per CPU second through apply, the store's write batch and the judgement."""
    reconciler = Reconciler(Settings(), TopicNames(), store, clock=lambda: T0 + timedelta(days=1))
    reconciler.writing = True
    started = time.process_time()
    for offset in range(0, len(values), BATCH):
        parts, touched = reconciler.apply(values[offset : offset + BATCH])
        reconciler.judged(touched, T0 + timedelta(days=1))
        groups = {g.key: rec.encode_slots(reconciler.groups[g]) for g in touched}
        store.write(parts, dict(groups), {("nxcloud.voice.call-events", 0): offset + BATCH})
    return len(values) / (time.process_time() - started)


def merge_path(calls: int = 2000, rounds: int = 3) -> float:
    """µs of CPU per observation on the worker's pure path: decode the call's state, merge,
    encode the state, dump the event (what `reports` adds to). Runs on any checkout."""
    from connector import codec

    world = sandbox.World(seed=5, origin=T0, rate=1.0)
    found = [c for m in range(calls) for c in world.calls(m)][:calls]
    observed = []
    for call in found:
        service = 0 if call.service == "group_call" else 1
        observed.append([
            (normalize.from_cdr(call.cdr_row(ZONE, False), service, ZONE),
             call.ended_at + timedelta(minutes=5)),
            (normalize.from_cdr(call.cdr_row(ZONE, True), service, ZONE),
             call.ended_at + timedelta(minutes=30)),
            (normalize.from_dr(call.dr_fields(ZONE), ZONE), call.ended_at),
        ])  # fmt: skip
    started = time.process_time()
    for _ in range(rounds):
        for three in observed:
            data = None
            for observation, at in three:
                state = codec.decode_state(data) if data else None
                state, event = merge(state, observation, at)
                data = codec.encode_state(state)
                if event is not None:
                    orjson.dumps(event)
    return (time.process_time() - started) / (rounds * 3 * len(observed)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconciler")
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    values = events(args.calls)
    print(f"{len(values):,} call events of {args.calls:,} calls; load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    figures: dict[str, list[float]] = {"memory": [], "rocksdb": []}
    with tempfile.TemporaryDirectory() as directory:
        for number, kind in enumerate(("memory", "rocksdb", "rocksdb", "memory")):
            store: Store = (RocksStore(Path(directory) / str(number)) if kind == "rocksdb"
                            else MemoryStore())  # fmt: skip
            try:
                figures[kind].append(run(values, store))
            finally:
                store.close()
    for kind, rates in figures.items():
        shown = " / ".join(f"{rate:,.0f}" for rate in rates)
        print(f"{kind:<8} {shown} call events per CPU second")
    print(f"the worker's merge path: {merge_path():.1f} us of CPU per observation")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
