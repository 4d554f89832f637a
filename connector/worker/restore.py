"""Each partition the worker is given, caught up from its changelog before a record of it
is merged: from the offset its store reached to the end the changelog had at the
assignment (all of it for a memory store, the tail for a RocksDB store that kept its disk).

Started on Faust's public `on_partitions_assigned` signal; the merge waits for the
partitions of its batch (`wait`). A partition kept through a rebalance stays as it is: only
this worker wrote to it meanwhile. A partition that went is closed once no batch and no
expiry uses the store (`lock`); its records still in a batch are skipped at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from time import monotonic
from typing import Any, Final

from aiokafka.errors import KafkaError

from connector.errors import ConnectorError
from connector.worker import changelog
from connector.worker.store import Store

log = logging.getLogger(__name__)

RETRY_SECONDS: Final = 2.0


class Restorer:
    def __init__(
        self,
        store: Store,
        topic: str,
        *,
        options: Callable[[], Mapping[str, Any]],
        declare: Callable[[], Awaitable[None]],
        lock: asyncio.Lock,
        not_ready: Path | None = None,
        restored: Callable[[int, float], None] = lambda records, seconds: None,
    ) -> None:
        self.store, self.topic, self.options, self.lock = store, topic, options, lock
        self.assigned: set[int] = set()
        self.declare, self.restored, self.not_ready = declare, restored, not_ready
        self.ready: dict[int, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closing: asyncio.Future[None] | None = None
        self.declared = False

    def _future(self, partition: int) -> asyncio.Future[None]:
        found = self.ready.get(partition)
        if found is None:
            found = self.ready[partition] = asyncio.get_running_loop().create_future()
        return found

    async def assign(self, partitions: set[int]) -> None:
        """The assignment: partitions that went are closed, the new ones caught up."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
        gone = (set(self.store.partitions) | set(self.ready)) - partitions
        self.assigned = set(partitions)
        for partition in gone:
            waited = self.ready.pop(partition, None)
            if waited is not None and not waited.done():
                waited.set_result(None)  # a batch waiting for it skips its records
        if gone:
            self.closing = asyncio.ensure_future(self._close(gone))
        behind = {p for p in partitions if not self._future(p).done()}
        self.task = None
        if behind:
            self._mark(f"catching up from the changelog: partitions {sorted(behind)}")
            self.task = asyncio.ensure_future(self._catch_up(behind))

    def _mark(self, reason: str | None) -> None:
        """The readiness probe's marker: not ready while a catch-up runs, so a rolling
        update waits for it before it restarts the next worker."""
        if self.not_ready is None:
            return
        if reason is None:
            self.not_ready.unlink(missing_ok=True)
        else:
            self.not_ready.parent.mkdir(parents=True, exist_ok=True)
            self.not_ready.write_text(reason + "\n")

    async def _close(self, gone: set[int]) -> None:
        async with self.lock:  # not under a batch or the expiry
            for partition in gone - self.assigned:
                self.store.close(partition)

    async def wait(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            future = self._future(partition)
            if not future.done():
                await asyncio.shield(future)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
        async with self.lock:
            self.store.close_all()

    async def _catch_up(self, partitions: set[int]) -> None:
        while True:
            try:
                await self._read(partitions)
                return
            except (KafkaError, OSError) as exc:
                log.warning("catching up from the changelog failed, trying again",
                            extra={"error": repr(exc), "retry_seconds": RETRY_SECONDS})  # fmt: skip
                await asyncio.sleep(RETRY_SECONDS)
            except Exception as exc:
                # Its partitions would wait for it for ever: the worker exits, a restart
                # tries again.
                log.critical("catching up from the changelog failed, exiting", exc_info=exc)
                logging.shutdown()
                os._exit(ConnectorError.exit_code)

    async def _read(self, partitions: set[int]) -> None:
        if not self.declared:
            await self.declare()
            self.declared = True
        options, started, count = self.options(), monotonic(), 0
        ends = await changelog.ends(options, self.topic, sorted(partitions))
        spans = {}
        for partition in partitions:
            held = self.store.open(partition)
            if held.offset >= ends[partition]:
                log.warning("a store is ahead of its changelog (a topic made anew?): "
                            "restoring the partition in full",
                            extra={"partition": partition, "offset": held.offset,
                                   "end": ends[partition]})  # fmt: skip
                held.clear()
            spans[partition] = (held.offset + 1, ends[partition])
        async for batches, finished in changelog.read(options, self.topic, spans):
            for partition, records in batches.items():
                changes = {record.key: record.value for record in records if record.key}
                self.store.restore(partition, changes, records[-1].offset)
                count += len(records)
            for partition in finished:
                self.store.flush(partition)
                self._future(partition).set_result(None)
            if finished and all(self._future(p).done() for p in partitions):
                self._mark(None)
        seconds = monotonic() - started
        self.restored(count, seconds)
        if count:
            log.info("restored from the changelog", extra={
                "records": count, "partitions": len(spans), "seconds": round(seconds, 1),
                "per_second": round(count / max(seconds, 1e-3)),
            })  # fmt: skip
