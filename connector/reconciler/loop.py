"""The reconciler: the call-event topic into each day's reconciliation
(`connector.reconciliation`), kept current on the compacted `nxcloud.voice.reconciliation`.

Every replica reads the whole call-event topic (and the poller's checkpoint, for how far
the provider's records are polled) into its own store, each call's part, each group's
slots and its offsets in one write batch; only the replica elected on the reconciliation
topic's one partition writes, once it has read that topic to its end (what is there) and
caught up with the call events, and only records whose figures changed. Killed at any
moment, a replica goes on from its store; a new one reads the topics from their start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import start_http_server

from connector import admin, clients, groups, registry, schema, wire
from connector import reconciliation as rec
from connector.clock import rfc3339, utcnow
from connector.errors import ConnectorError
from connector.reconciler.metrics import ReconcilerMetrics
from connector.reconciler.store import MemoryStore, Store, open_store
from connector.schedule import Checkpoint
from connector.settings import Settings
from connector.topics import TopicNames, declare

log = logging.getLogger(__name__)
BATCH: Final = 2000
# How often the open days are judged again (the DR grace, the poller's progress, the end of
# the provider's 7 days pass without an event).
TICK_SECONDS: Final = 30.0
HEADERS: Final = [
    ("ce_dataschema", str(schema.schema_id("reconciliation.v1")).encode()),
    ("content-type", b"application/json"),
]


class Election(ConsumerRebalanceListener):  # type: ignore[misc]
    """The member holding the reconciliation topic's one partition is the writer."""

    def __init__(self, partition: TopicPartition) -> None:
        self.partition = partition
        self.assigned = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.partition in revoked:
            self.assigned = False

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned = self.partition in assigned


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        names: TopicNames,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        source: str | None = None,
        target: str | None = None,
        metrics: ReconcilerMetrics | None = None,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.settings, self.names, self.store, self.clock = settings, names, store, clock
        self.source = source or names.call_events
        self.target = target or names.reconciliation
        self.metrics = metrics or ReconcilerMetrics()
        self.rules = rec.Rules.of(settings)
        self.groups: dict[rec.Group, rec.Slots] = {
            rec.Group.parse(key): rec.decode_slots(value) for key, value in store.groups()
        }
        self.polled: dict[int, datetime] = {}
        # Days older than the call-event topic keeps: their figures stay, their calls'
        # parts are forgotten (once a day), and their events change nothing.
        self.keep = timedelta(days=settings.call_event_retention_days + 1)
        self.horizon = (clock() - self.keep).astimezone(self.rules.zone).date()
        self.pruned_on: date | None = None
        self.published: dict[str, dict[str, Any]] = {}  # the figures on the target, by key
        self.writing = self.caught_up = False
        self.ticked = float("-inf")
        self.written = 0
        self.election: AIOKafkaConsumer | None = None
        self.listener = Election(TopicPartition(self.target, 0))
        self.ids = registry.ids(settings, names)
        self.progress = TopicPartition(names.poller_state, 0)
        self.account = settings.account.encode()

    def apply(self, values: Iterable[bytes]) -> tuple[dict[str, bytes], set[rec.Group]]:
        """The call events' parts into the groups: the parts to store, the groups changed."""
        parts: dict[str, bytes] = {}
        seen: dict[str, rec.Part] = {}
        dirty: set[rec.Group] = set()
        for value in values:
            self.metrics.events.inc()
            try:
                piece = rec.part(orjson.loads(wire.payload(value)), self.rules)
            except (ValueError, KeyError, TypeError, AssertionError, ArithmeticError) as exc:
                self.metrics.unreadable.inc()
                log.warning("a call event the reconciler cannot read, skipped",
                            extra={"error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
                continue
            if piece.group.day < self.horizon:
                continue  # its part was forgotten with its day (see prune)
            old = seen.get(piece.call_id)
            if old is None:
                stored = self.store.part(piece.call_id)
                old = rec.decode_part(piece.call_id, stored) if stored else None
            if not piece.newer_than(old):
                continue
            if old is not None:
                rec.put(self.groups.setdefault(old.group, {}), old, -1)
                dirty.add(old.group)
            rec.put(self.groups.setdefault(piece.group, {}), piece)
            dirty.add(piece.group)
            seen[piece.call_id] = piece
            parts[piece.call_id] = rec.encode_part(piece)
        return parts, dirty

    def judged(self, groups: Iterable[rec.Group], now: datetime) -> dict[str, dict[str, Any]]:
        """The records of `groups` at `now` whose figures differ from those written."""
        changed = {}
        for group in groups:
            slots = self.groups.get(group, {})
            if not slots and group.key not in self.published:
                continue  # a group its calls all left before it was ever written
            found = rec.record(group, slots, now=now, polled=self.polled, rules=self.rules)
            if self.published.get(group.key) != found:
                changed[group.key] = found
        return changed

    def unfinished(self) -> set[rec.Group]:
        """The groups whose written record may still change with time alone."""
        return {group for group in self.groups
                if self.published.get(group.key, {}).get("status") != "final"}  # fmt: skip

    async def write(
        self, producer: AIOKafkaProducer, changed: dict[str, dict[str, Any]], now: datetime
    ) -> None:
        deliveries = []
        for key, found in sorted(changed.items()):
            value = orjson.dumps({**found, "updated_at": rfc3339(now)})
            if self.ids is not None:  # the reconciliation's schema, whatever the topic's name
                value = await self.ids.frame(self.names.reconciliation, value)
            deliveries.append(
                await producer.send(self.target, value, key=key.encode(), headers=HEADERS)
            )
        await asyncio.gather(*deliveries)
        self.published.update(changed)
        self.metrics.records.inc(len(changed))
        self.written += len(changed)

    def read_written(self, records: Iterable[Any]) -> None:
        """What is on the target topic (before this replica writes): the figures by key."""
        for record in records:
            if record.value is not None:
                found = orjson.loads(wire.payload(record.value))
                self.published[record.key.decode()] = rec.figures(found)

    def take_checkpoint(self, records: Iterable[Any]) -> bool:
        """The poller's latest checkpoint for the account; True when it moved."""
        before = self.polled
        for record in records:
            if record.key == self.account and record.value:
                self.polled = rec.polled_through(Checkpoint.from_json(record.value))
        return self.polled != before

    def show(self, now: datetime) -> None:
        if self.writing:
            today = now.astimezone(self.rules.zone).date()
            self.metrics.show(self.published.values(), today)
        else:
            self.metrics.hide()

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Until `stop` is set; with `once`, read the call events to their end as they were
        at the start, write every group's record, and return (a rebuild)."""
        consumer = AIOKafkaConsumer(**clients.options(self.settings, enable_auto_commit=False))
        producer = AIOKafkaProducer(**clients.options(
            self.settings, acks="all", enable_idempotence=True, linger_ms=10))  # fmt: skip
        async with admin.running(consumer):
            await producer.start()
            try:
                sources = await self._assign(consumer)
                ends = await consumer.end_offsets([*sources, self.progress])
                if once:
                    await self._read_target()
                while not stop.is_set():
                    await self._step(consumer, producer, sources, ends, once=once)
                    if once and self.writing:
                        return
            finally:
                self.metrics.active.set(0)
                if self.election is not None:
                    await admin.stop(self.election)
                await producer.stop()

    async def _step(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        sources: list[TopicPartition],
        ends: dict[TopicPartition, int],
        *,
        once: bool,
    ) -> None:
        """One batch of call events into the store; the records that changed written."""
        batches = await consumer.getmany(timeout_ms=300, max_records=BATCH)
        moved = self.take_checkpoint(batches.pop(self.progress, []))
        offsets = {(tp.topic, tp.partition): records[-1].offset + 1
                   for tp, records in batches.items() if records}  # fmt: skip
        parts, touched = self.apply(r.value for rs in batches.values() for r in rs if r.value)
        if not self.caught_up and await _reached(consumer, ends):
            self.caught_up = True
            log.info("caught up with the call events",
                     extra={"groups": len(self.groups), "source": self.source})  # fmt: skip
            if not once:
                self.election = self._elect()
                await self.election.start()
        now, started = self.clock(), False
        if self.election is not None:
            started = await self._follow_election(self.election)
        elif once and self.caught_up:
            self.writing = started = True
        loop_time = asyncio.get_running_loop().time()
        due = moved or started or loop_time - self.ticked >= self.tick_seconds
        if self.writing:
            judge = set(touched)
            if started:  # every group, and every record written of a group gone since
                judge |= set(self.groups) | {rec.Group.parse(key) for key in self.published}
            elif due:
                judge |= self.unfinished()
            changed = self.judged(judge, now)
            await self.write(producer, changed, now)
            if changed:
                self.show(now)
        if due:  # a final group's slots are all judged alike: one is enough
            for group in [g for g in self.groups if now >= rec.final_at(g.day, self.rules)]:
                merged = rec.settle(self.groups[group])
                if merged is not self.groups[group]:
                    self.groups[group] = merged
                    touched.add(group)
        self.store.write(parts, {g.key: rec.encode_slots(self.groups[g]) if self.groups[g]
                                 else None for g in touched}, offsets)  # fmt: skip
        for group in [g for g in touched if not self.groups[g]]:
            del self.groups[group]
        if due:
            self.ticked = loop_time
            self.show(now)
            self._prune(now)
            await self._lag(consumer, sources)

    def _prune(self, now: datetime) -> None:
        today = now.astimezone(self.rules.zone).date()
        if self.pruned_on == today:
            return
        self.pruned_on = today
        self.horizon = (now - self.keep).astimezone(self.rules.zone).date()
        pruned = self.store.prune(self.horizon.isoformat())
        if pruned:
            log.info("forgot the parts of calls past the call-event retention",
                     extra={"calls": pruned, "before": self.horizon.isoformat()})  # fmt: skip

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        sources = await admin.partitions_of(consumer, self.source)
        if not sources:
            raise ConnectorError(f"topic {self.source} does not exist: run `nxcloud-connector "
                                 "topics` (or `replay --into` to make one)")  # fmt: skip
        stored = self.store.offsets()
        foreign = sorted({topic for topic, _ in stored if topic != self.source})
        if foreign:
            raise ConnectorError(
                f"the reconciler's store follows {', '.join(foreign)}, not {self.source}: "
                "give it a data directory of its own (NXCLOUD_RECONCILER_DATA_DIR)"
            )
        consumer.assign([*sources, self.progress])
        for tp in sources:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        await consumer.seek_to_beginning(self.progress)
        return sources

    async def _read_target(self) -> None:
        """A rebuild's target as it is: write only what differs from it."""
        reader = AIOKafkaConsumer(**clients.options(self.settings, enable_auto_commit=False))
        async with admin.running(reader):
            partitions = await admin.partitions_of(reader, self.target)
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            while not await _reached(reader, ends):
                for records in (await reader.getmany(timeout_ms=300)).values():
                    self.read_written(records)

    def _elect(self) -> AIOKafkaConsumer:
        election = AIOKafkaConsumer(**clients.options(
            self.settings, group_id=groups.reconciler(self.settings),
            client_id=groups.reconciler(self.settings), enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000,
        ))  # fmt: skip
        election.subscribe([self.target], listener=self.listener)
        return election

    async def _follow_election(self, election: AIOKafkaConsumer) -> bool:
        """Read what the target holds until this replica writes; True when it starts to."""
        batches = await election.getmany(timeout_ms=0)
        if not self.listener.assigned:
            if self.writing:
                log.info("no longer the reconciler that writes")
            self.writing, self.published = False, {}
            self.metrics.active.set(0)
            return False
        if self.writing:
            return False
        self.read_written(batches.get(self.listener.partition, []))
        tp = self.listener.partition
        if await election.position(tp) < (await election.end_offsets([tp]))[tp]:
            return False
        log.info("elected the reconciler that writes", extra={"topic": self.target})
        self.writing = True
        self.metrics.active.set(1)
        return True

    async def _lag(self, consumer: AIOKafkaConsumer, sources: list[TopicPartition]) -> None:
        ends = await consumer.end_offsets(sources)
        behind = 0
        for tp in sources:
            behind += max(0, ends[tp] - await consumer.position(tp))
        self.metrics.lag.set(behind)


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def reconcile_forever(settings: Settings, names: TopicNames | None = None) -> int:
    """The reconciler as a process: until SIGINT or SIGTERM, with its metrics endpoint."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await clients.check(settings)
    names = names or TopicNames.of(settings)
    await admin.await_topics(settings, [names.call_events, names.poller_state,
                                        names.reconciliation])  # fmt: skip
    store = open_store(settings.reconciler_store, Path(settings.reconciler_data_dir))
    try:
        reconciler = Reconciler(settings, names, store)
        if settings.reconciler_metrics_port:
            start_http_server(settings.reconciler_metrics_port, settings.metrics_host,
                              registry=reconciler.metrics.registry)  # fmt: skip
        with clients.refusals(settings):
            await reconciler.run(stop)
    finally:
        store.close()
    return 0


async def rebuild(settings: Settings, *, source: str | None, into: str | None) -> int:
    """`reconciler --once`: `source`'s call events (the live topic, or one `replay --into`
    made) read afresh, in memory, into `into`, created like the reconciliation topic;
    returns how many records it wrote (those whose figures differ from what is there)."""
    names = TopicNames.of(settings)
    target = into or names.reconciliation
    spec = next(spec for spec in declare(settings, names) if spec.name == names.reconciliation)
    await admin.converge(settings, (replace(spec, name=target),))
    reconciler = Reconciler(settings, names, MemoryStore(), source=source, target=target)
    await reconciler.run(asyncio.Event(), once=True)
    return reconciler.written
