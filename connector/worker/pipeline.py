"""The worker's path for a batch of source records, and for the calls past the horizon.

A batch: the partitions it touches caught up, each record observed (or dead-lettered),
merged with its call's stored state (`connector.merge`), the events sent and acknowledged,
then each changed call's state sent to the changelog on the record's partition and,
once acknowledged, written to the store with the offset it reached. The events first: a
state saying "emitted" never outlives a lost event; the changelog before the store: a
store never holds what its changelog lacks, so a restore gives back what was written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from faust.types import EventT

from connector import codec
from connector.errors import Unusable
from connector.merge import CallState, expired, merge_batch, missing
from connector.records import observe
from connector.settings import Settings
from connector.topics import TopicNames
from connector.worker import telemetry
from connector.worker.output import Output
from connector.worker.restore import Restorer
from connector.worker.store import Changes, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Horizon:
    state: timedelta  # a call unchanged this long is forgotten
    dr_grace: timedelta  # a call with CDR rows and no DR this long lacks its DR

    @classmethod
    def of(cls, settings: Settings) -> Horizon:
        return cls(timedelta(days=settings.worker_state_days),
                   timedelta(seconds=settings.worker_dr_grace_seconds))  # fmt: skip


async def scan(
    items: Iterable[tuple[bytes, bytes]], now: datetime, horizon: Horizon
) -> tuple[list[bytes], Tally[str]]:
    """The calls past the horizon, and the census of the others."""
    stale, census = [], Tally[str]()
    for number, (key, value) in enumerate(items):
        state = codec.decode_state(value)
        if expired(state, now, horizon.state):
            stale.append(key)
        else:
            census["calls"] += 1
            census[missing(state, now, horizon.dr_grace) or "complete"] += 1
        if number % 1000 == 999:
            await asyncio.sleep(0)  # a million calls take seconds: let the merge run
    return stale, census


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        names: TopicNames,
        store: Store,
        restorer: Restorer,
        *,
        output: Output,
        metrics: telemetry.WorkerMetrics | None = None,
    ) -> None:
        self.settings, self.names, self.store = settings, names, store
        self.restorer, self.output, self.metrics = restorer, output, metrics
        self.horizon = Horizon.of(settings)

    async def merge(self, records: Sequence[EventT[bytes]]) -> None:
        started = time.perf_counter()
        async with self.restorer.lock:
            await self.restorer.wait({record.message.partition for record in records})
            held, output = self.restorer.assigned, self.output
            observed, deliveries, where = [], [], {}
            for record in records:
                message = record.message
                if message.partition not in held:
                    continue  # gone in a rebalance: its new owner reads it
                try:
                    observation, seen_at = observe(message.topic, record.value, self.names,
                                                   self.settings)  # fmt: skip
                except Unusable as exc:
                    deliveries.append(await output.dead_letter(
                        str(exc), message.topic, message.partition, message.offset, record.value
                    ))  # fmt: skip
                    if self.metrics is not None:
                        self.metrics.dead_letter(str(exc))
                    continue
                where[observation.call_id] = message.partition
                observed.append((message.partition, observation, seen_at))

            def stored(call_id: str) -> CallState | None:
                value = self.store.get(where[call_id], call_id.encode())
                return None if value is None else codec.decode_state(value)

            batch = merge_batch(observed, stored)
            deliveries += await output.events(batch.events)
            await asyncio.gather(*deliveries)
            changes: dict[int, dict[bytes, bytes | None]] = {}
            for call_id, (partition, state) in batch.changed.items():
                changes.setdefault(partition, {})[call_id.encode()] = codec.encode_state(state)
            await self._keep(changes)
        if self.metrics is not None:
            self.metrics.batch(records, len(batch.events), len(observed), started)

    async def _keep(self, changes: Mapping[int, Changes]) -> None:
        """Each partition's changes to its changelog, then, acknowledged, to its store."""

        async def kept(partition: int, calls: Changes) -> None:
            offset = await self.output.changes(partition, calls.items())
            self.store.write(partition, calls, offset)

        await asyncio.gather(*(kept(partition, calls) for partition, calls in changes.items()))

    async def expire(self, now: datetime) -> None:
        """Forget the calls past the horizon on the partitions held (a tombstone in the
        changelog each), and count the others for the census."""
        async with self.restorer.lock:
            census, forgotten = Tally[str](), {}
            ready = self.restorer.ready
            for partition in sorted(self.restorer.assigned):
                held = self.store.partitions.get(partition)
                if held is None or partition not in ready or not ready[partition].done():
                    continue
                stale, counted = await scan(held.items(), now, self.horizon)
                census.update(counted)
                if stale:
                    forgotten[partition] = dict.fromkeys(stale)
            await self._keep(forgotten)
        if forgotten:
            log.info("forgot calls past the state horizon",
                     extra={"calls": sum(len(calls) for calls in forgotten.values())})  # fmt: skip
        if self.metrics is not None:
            self.metrics.census(telemetry.Census(census["calls"], census["dr"], census["cdr"]))
