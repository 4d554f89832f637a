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
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Any, Final

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import EventT
from mode import Service

log = logging.getLogger(__name__)

CHUNK: Final = 10_000  # records taken from the queue between two checks for the end
IDLE_SECONDS: Final = 5.0  # Faust's wait for a record before it checks for the end


class ChunkedRecovery(Recovery):
    applied: int = 0  # changelog records applied to the store, actives and standbys

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
    """Faust's table manager with the recovery above (the app's `TableManager`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ChunkedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
