"""Raw history back through normalize and merge: `replay`, `replay --into`, `redrive`.

`replay` normalizes raw records of a time range with the current settings and hands the
observations to the running worker (on `observations`), so a call whose content is
unchanged produces nothing and a corrected one gets the next revision. `--into` merges the
range afresh, in this process, into a new call-event topic. `redrive` retries dead letters.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from connector import (
    admin,
    clients,
    codec,
    deadletters,
    dr,
    envelope,
    groups,
    normalize,
    registry,
    wire,
)
from connector.errors import ConnectorError, Invalid, Unusable
from connector.identity import call_key, dr_key
from connector.merge import CallState, merge
from connector.records import observe
from connector.settings import Settings
from connector.topics import TopicNames, TopicSpec, declare

SETTLE_WITHIN = 600.0


@dataclass
class Summary:
    read: int = 0
    observations: int = 0
    dead_letters: int = 0
    calls: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [
            f"records read:   {self.read}",
            f"calls touched:  {len(self.calls)}",
            f"calls changed:  {len(self.changed)}",
            f"dead letters:   {self.dead_letters}",
        ]


class Progress:
    """One line per topic, redrawn on a terminal, printed every few seconds elsewhere."""

    def __init__(self, out: TextIO = sys.stderr, every: float = 5.0) -> None:
        self.out, self.every, self.shown = out, every, 0.0
        self.live = out.isatty()

    def show(self, topic: str, done: int, total: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and not self.live and now - self.shown < self.every:
            return
        if not final and self.live and now - self.shown < 0.1:
            return
        self.shown = now
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        line = f"{topic} [{bar:<30}] {done:,}/{total:,} {share:4.0%}"
        self.out.write(("\r" + line + ("\n" if final else "")) if self.live else line + "\n")
        self.out.flush()


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


async def scan(
    settings: Settings,
    topic: str,
    since: datetime | None,
    until: datetime | None,
    progress: Progress,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` stored in [since, until), as the log had it at the start."""
    consumer = AIOKafkaConsumer(**clients.options(settings, enable_auto_commit=False))
    async with admin.running(consumer):
        partitions = await admin.partitions_of(consumer, topic)
        if not partitions:
            raise ConnectorError(f"topic {topic} does not exist")
        ends = await consumer.end_offsets(partitions)
        starts = await _offsets_at(
            consumer, _ms(since), await consumer.beginning_offsets(partitions), ends
        )
        stops = await _offsets_at(consumer, _ms(until), ends, ends)
        wanted = {tp: (starts[tp], stops[tp]) for tp in partitions if starts[tp] < stops[tp]}
        total, done = sum(stop - start for start, stop in wanted.values()), 0
        consumer.assign(list(wanted))
        for tp, (start, _stop) in wanted.items():
            consumer.seek(tp, start)
        while wanted:
            batches = await consumer.getmany(*wanted, timeout_ms=1000)
            for tp, records in batches.items():
                stop = wanted[tp][1]
                for record in records:
                    if record.offset < stop:
                        done += 1
                        yield record
                if records and records[-1].offset >= stop - 1:
                    del wanted[tp]
                    consumer.pause(tp)
            progress.show(topic, done, total)
        progress.show(topic, done, total, final=True)


async def _offsets_at(
    consumer: AIOKafkaConsumer,
    at_ms: int | None,
    otherwise: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """The first offset stored at or after `at_ms` (the end when none is), per partition."""
    if at_ms is None:
        return dict(otherwise)
    found = await consumer.offsets_for_times(dict.fromkeys(ends, at_ms))
    return {tp: end if found[tp] is None else found[tp].offset for tp, end in ends.items()}


def sources(names: TopicNames, source: str) -> list[str]:
    return {"dr": [names.dr_raw], "cdr": [names.cdr_raw]}.get(source, [names.dr_raw, names.cdr_raw])


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **clients.options(settings, acks="all", enable_idempotence=True, linger_ms=10)
    )


async def replay(
    settings: Settings,
    *,
    source: str,
    since: datetime,
    until: datetime | None,
    progress: Progress,
    now: datetime,
    names: TopicNames | None = None,
) -> Summary:
    """Hand a range's observations to the running worker; wait until it has merged them.
    `now`, when the replay starts, tells the call events it changed from earlier ones."""
    names = names or TopicNames.of(settings)
    summary, ids = Summary(), registry.ids(settings, names)
    async with _producer(settings) as producer:
        for topic in sources(names, source):
            async for record in scan(settings, topic, since, until, progress):
                summary.read += 1
                if observed := await _normalized(record, names, settings, producer, summary,
                                                 ids=ids):  # fmt: skip
                    await _hand_over(*observed, names, producer, summary)
        await producer.flush()
        ends = await _ends(settings, names.observations)
    await _await_merged(settings, names, ends)
    summary.changed = await _changed_since(settings, names.call_events, now, summary.calls)
    return summary


async def _normalized(
    record: ConsumerRecord[bytes, bytes],
    names: TopicNames,
    settings: Settings,
    producer: AIOKafkaProducer,
    summary: Summary,
    *,
    ids: registry.Ids | None,
) -> tuple[normalize.Observation, datetime] | None:
    """The record's observation, or None once it is on the dead-letter topic, as the worker
    would put it there (framed when the wire format is on)."""
    value = record.value or b""
    try:
        return observe(record.topic, value, names, settings)
    except Unusable as exc:
        summary.dead_letters += 1
        letter = deadletters.unusable_record(
            str(exc), record.topic, record.partition, record.offset, value
        )
        if ids is not None:
            letter = await ids.frame(names.dead_letter, letter)
        await producer.send(names.dead_letter, letter)
        return None


async def _hand_over(
    observation: normalize.Observation,
    seen_at: datetime,
    names: TopicNames,
    producer: AIOKafkaProducer,
    summary: Summary,
) -> None:
    """To the running worker, keyed like the call's raw records (`connector.identity`)."""
    summary.observations += 1
    summary.calls.add(observation.call_id)
    encoded = codec.encode_observation(observation, seen_at)
    key = call_key(observation.message_id, observation.phone_raw)
    await producer.send(names.observations, encoded, key=key)


async def _ends(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**clients.options(settings))
    async with admin.running(consumer):
        partitions = await admin.partitions_of(consumer, topic)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends


async def _await_merged(
    settings: Settings, names: TopicNames, ends: dict[TopicPartition, int]
) -> None:
    """Until the worker group has committed past everything the replay handed it."""
    deadline = time.monotonic() + SETTLE_WITHIN
    client = AIOKafkaAdminClient(**clients.options(settings))
    await client.start()
    try:
        while time.monotonic() < deadline:
            try:
                committed = await client.list_consumer_group_offsets(groups.worker(settings))
            except KafkaError:
                committed = {}
            if all(
                tp in committed and committed[tp].offset >= end for tp, end in ends.items() if end
            ):
                return
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    raise ConnectorError(
        f"the worker did not merge the replayed records within {SETTLE_WITHIN:.0f} s: "
        f"is `nxcloud-connector worker` running on {names.observations}?"
    )


async def _changed_since(
    settings: Settings, topic: str, since: datetime, calls: set[str]
) -> set[str]:
    changed: set[str] = set()
    async for record in scan(settings, topic, since, None, Progress(io.StringIO())):
        call_id = (record.key or b"").decode()
        if call_id in calls:
            changed.add(call_id)
    return changed


async def rebuild(
    settings: Settings,
    *,
    into: str,
    since: datetime | None,
    until: datetime | None,
    progress: Progress,
    names: TopicNames | None = None,
) -> Summary:
    """A complete call-event topic from the raw topics, merged afresh in arrival order."""
    names = names or TopicNames.of(settings)
    events_spec = next(spec for spec in declare(settings, names) if spec.name == names.call_events)
    target = TopicSpec(
        into, events_spec.partitions, events_spec.replication_factor, events_spec.config
    )
    await admin.converge(settings, (target,))
    summary, ids = Summary(), registry.ids(settings, names)
    observed: list[tuple[datetime, int, normalize.Observation]] = []
    async with _producer(settings) as producer:
        for topic in sources(names, "all"):
            async for record in scan(settings, topic, since, until, progress):
                summary.read += 1
                if found := await _normalized(record, names, settings, producer, summary, ids=ids):
                    observation, seen_at = found
                    observed.append((seen_at, len(observed), observation))
        states: dict[str, CallState] = {}
        for seen_at, _order, observation in sorted(observed, key=lambda item: item[:2]):
            state, event = merge(states.get(observation.call_id), observation, seen_at)
            states[observation.call_id] = state
            summary.calls.add(observation.call_id)
            if event is not None:
                summary.changed.add(observation.call_id)
                value = orjson.dumps(event)
                if ids is not None:  # the call events' schema, whatever the topic's name
                    value = await ids.frame(names.call_events, value)
                await producer.send(
                    into, value, key=event["call_id"].encode(),
                    headers=envelope.headers(event, envelope.source(settings)),
                )  # fmt: skip
        await producer.flush()
    return summary


async def redrive(
    settings: Settings, since: datetime | None, progress: Progress, names: TopicNames | None = None
) -> Summary:
    """Dead letters back in: a receiver's refused DR to the raw topic if it is valid now,
    a worker's record to the merge if it normalizes now; the rest stay where they are."""
    names = names or TopicNames.of(settings)
    summary = Summary()
    async with _producer(settings) as producer:
        async for record in scan(settings, names.dead_letter, since, None, progress):
            summary.read += 1
            letter: dict[str, Any] = orjson.loads(wire.payload(record.value or b"{}"))
            if not await _redriven(letter, names, settings, producer, summary):
                summary.dead_letters += 1
        await producer.flush()
    return summary


async def _redriven(
    letter: dict[str, Any],
    names: TopicNames,
    settings: Settings,
    producer: AIOKafkaProducer,
    summary: Summary,
) -> bool:
    if letter.get("source") == "receiver":
        fields = letter.get("fields")
        if not isinstance(fields, dict):
            return False
        try:
            dr.validate(fields)
        except Invalid:
            return False
        arrival = dr.Arrival(
            letter["receipt_id"], datetime.fromisoformat(letter["received_at"]),
            letter["remote_addr"], letter["receiver"], letter["method"], letter["content_type"],
        )  # fmt: skip
        await producer.send(names.dr_raw, dr.raw_record(fields, arrival), key=dr_key(fields))
        summary.observations += 1
        return True
    topic, value = letter.get("topic"), str(letter.get("value", "")).encode()
    if topic not in (names.dr_raw, names.cdr_raw):
        return False
    try:
        observation, seen_at = observe(topic, value, names, settings)
    except Unusable:
        return False
    await _hand_over(observation, seen_at, names, producer, summary)
    return True


def print_summary(summary: Summary, out: TextIO = sys.stdout, extra: Iterable[str] = ()) -> None:
    for line in [*summary.lines(), *extra]:
        print(line, file=out)
