"""The worker's table recovery: Faust's, taking the changelog in chunks instead of one
record at a time.

Faust's recovery loop waits for each changelog record with its own `asyncio.wait_for`
(a new task per record), and after each one checks whether every partition has caught up
and whether the standbys have (both a walk over all the partitions held). At a million
calls that per-record work, not RocksDB, is where a restore spends its time
(docs/worker.md). Here the loop waits for the first record, takes every record already
queued with it (up to `CHUNK`), files them as Faust does (same offsets, same buffers,
written to the store in batches of the table's `recovery_buffer_size`), and checks for
the end once per chunk. It also counts the records it applied, for the restore-rate
metric.

A restore of `STRAIGHT_FROM` records or more goes faster still: the active partitions
are read straight from Kafka by a consumer of their own (`changelog.read`) and written to
the store batch by batch with the offsets Faust keeps (`changelog.write`), and Faust's
consumer is sought to their end, so it reads none of them.
Recovery ends as Faust's does: once every active partition is at the end taken at the
assignment. The reader stops at a rebalance or a revocation (what it wrote up to then is
in the store with its offset, as a Faust batch is), and if it fails, Faust's consumer is
sought back to where it stood and the rest is read Faust's way. Standbys stay Faust's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any, Final, cast

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, EventT
from faust.types.transports import ConsumerT
from mode import Service

from connector.worker import changelog

log = logging.getLogger(__name__)

CHUNK: Final = 10_000  # records taken from the queue between two checks for the end
IDLE_SECONDS: Final = 5.0  # Faust's wait for a record before it checks for the end
STRAIGHT_FROM: Final = 10_000  # records to restore from which they are read straight


class ChunkedRecovery(Recovery):
    applied: int = 0  # changelog records applied to the store, actives and standbys
    reading: frozenset[TP] = frozenset()  # active partitions the straight reader holds
    _reader: asyncio.Task[None] | None = None

    async def _seek_offsets(
        self, consumer: ConsumerT, tps: set[TP], offsets: Counter[TP], title: str
    ) -> None:
        """Faust's seek before a restore; the active partitions to read straight are
        sought to their end instead, and the reader starts."""
        spans: dict[TP, tuple[int, int]] = {}
        options = cast(Tables, self.tables).reader_options
        if offsets is self.active_offsets and options is not None:
            spans = {
                tp: (offsets[tp] + 1, self.active_highwaters[tp] + 1)
                for tp in tps
                if offsets[tp] is not None and self.active_highwaters[tp] > offsets[tp]
            }
            if sum(end - start for start, end in spans.values()) < STRAIGHT_FROM:
                spans = {}
        sought = Counter(offsets)
        for tp, (_, end) in spans.items():
            sought[tp] = end
        await super()._seek_offsets(consumer, tps, sought, title)
        if options is not None and spans:
            self._stop_reading()
            self.reading = frozenset(spans)
            self._reader = asyncio.ensure_future(self._read(options(), spans))

    async def _read(self, options: Mapping[str, Any], spans: dict[TP, tuple[int, int]]) -> None:
        generation, started = self.app.consumer_generation_id, monotonic()
        total, count = sum(end - start for start, end in spans.values()), 0
        log.info("restoring straight from the changelog",
                 extra={"records": total, "partitions": len(spans)})  # fmt: skip
        written: dict[int, Any] = {}  # RocksDB databases, flushed before anything else writes
        try:
            async for batches, finished in changelog.read(options, spans):
                if generation != self.app.consumer_generation_id:
                    return  # a rebalance: its own recovery reads from the store's offsets
                for tp, records in batches.items():
                    db = changelog.write(self.tp_to_table[tp], tp, records)
                    if db is not None:
                        written[id(db)] = db
                    self.active_offsets[tp] = records[-1].offset
                    count += len(records)
                    self.applied += len(records)
                for tp in finished:
                    self.active_offsets[tp] = max(self.active_offsets[tp], spans[tp][1] - 1)
                self.reading -= finished
        except Exception as exc:
            log.warning("restoring straight from the changelog failed: the rest Faust's way",
                        extra={"error": repr(exc)})  # fmt: skip
            changelog.flush(written.values())  # before Faust's way writes with the log
            written.clear()
            left, self.reading = self.reading, frozenset()
            offsets = {tp: self.active_offsets[tp] + 1 for tp in left}
            await self.app.consumer.seek_wait(offsets)
            return
        finally:
            changelog.flush(written.values())
        seconds = monotonic() - started
        log.info("restored straight from the changelog", extra={
            "records": count, "seconds": round(seconds, 1),
            "per_second": round(count / max(seconds, 1e-3)),
        })  # fmt: skip
        self._maybe_end()

    def _stop_reading(self) -> asyncio.Task[None] | None:
        reader, self._reader, self.reading = self._reader, None, frozenset()
        if reader is not None:
            reader.cancel()
        return reader

    def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._stop_reading()
        super().on_partitions_revoked(revoked)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        reader = self._stop_reading()
        if reader is not None:
            await asyncio.wait([reader])
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_stop(self) -> None:
        reader = self._stop_reading()
        if reader is not None:
            await asyncio.wait([reader])
        await super().on_stop()

    @Service.task
    async def _slurp_changelogs(self) -> None:
        queue = self.tables.changelog_queue
        while not self.should_stop:
            self.signal_recovery_end.clear()
            try:
                first = await asyncio.wait_for(queue.get(), timeout=IDLE_SECONDS)
            except TimeoutError:
                if self.should_stop:
                    return
                self._maybe_end()
                continue
            except Exception as exc:  # Faust's loop logs and goes on, as here
                log.warning("error in recovery: %s", exc)
                continue
            events = [first]
            while len(events) < CHUNK:
                try:
                    events.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._file(events)
                self._maybe_end()
                if not self.tables.standbys_ready and not self.standby_remaining_total():
                    self.tables.on_standbys_ready()
            except Exception as exc:
                log.warning("error in recovery: %s", exc)

    async def _file(self, events: list[EventT[Any]]) -> None:
        """Faust's bookkeeping for each record, without its per-record checks. A record of
        a partition no longer held is dropped (Faust would file it under the table of the
        record before it)."""
        now = monotonic()
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
            table = self.tp_to_table.get(tp)
            if tp in self.reading:
                continue  # past the end the reader restores to (Faust's consumer is there)
            if tp in self.active_tps:
                offsets, size = self.active_offsets, "recovery_buffer_size"
                self._active_events_received_at[tp] = now
            elif tp in self.standby_tps:
                offsets, size = self.standby_offsets, "standby_buffer_size"
                self._standby_events_received_at.setdefault(tp, now)
            else:
                continue
            if table is None:
                continue
            seen: int | None = offsets.get(tp)
            if seen is not None and offset <= seen:
                continue
            offsets[tp] = offset
            buffer = self.buffers[table]
            buffer.append(event)
            if getattr(table, "_on_changelog_event", None) is not None:
                await table.on_changelog_event(event)
            if len(buffer) >= self.buffer_sizes.setdefault(tp, getattr(table, size)):
                self._apply(table, buffer)
                self._last_flush_at = now
        self._last_active_event_processed_at = monotonic()

    def _apply(self, table: Any, buffer: list[EventT[Any]]) -> None:
        table.apply_changelog_batch(buffer)
        self.applied += len(buffer)
        buffer.clear()

    def flush_buffers(self) -> None:
        for table, buffer in self.buffers.items():
            self._apply(table, buffer)
        self._last_flush_at = monotonic()

    def _maybe_end(self) -> None:
        if self.in_recovery and not self.need_recovery():
            self.flush_buffers()
            self._set_recovery_ended()
            self.signal_recovery_end.set()


class Tables(TableManager):
    """Faust's table manager with the recovery above (the app's `TableManager`); with
    `reader_options` (the Kafka client's options, built at each restore), large restores
    are read straight from the changelog."""

    reader_options: Callable[[], Mapping[str, Any]] | None = None

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ChunkedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
