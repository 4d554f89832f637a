"""Prometheus metrics of the worker: what it consumed, emitted and rejected, how far behind
it is, its rebalances, and the calls in its state (with those still missing a source).

Counting is done once per batch, never per record beyond a dict update, and the gauges
that need the consumer or the state are set from timers (lag) and the expiry scan.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import faust
from faust.types import TP, AppT, EventT, Message, PendingMessage, RecordMetadata, StreamT
from faust.types.transports import ProducerT
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from connector import release
from connector.clock import LATENCY_BUCKETS
from connector.errors import ConfigError

SAMPLE_SECONDS: Final = 1.0
REBALANCE_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Dead-letter reasons as bounded labels: the message itself holds the bad value.
REASONS: Final = (
    ("not a raw record", "not_raw"),
    ("phone", "bad_phone"),
    ("time", "bad_time"),
    ("voice_type", "bad_voice_type"),
    ("messageid", "no_messageid"),
)


def reason_label(reason: str) -> str:
    for start, label in REASONS:
        if reason.startswith(start):
            return label
    if "number" in reason:
        return "bad_number"
    return "unusable"


@dataclass(frozen=True)
class Census:
    """What the expiry scan counted on the partitions this worker owns."""

    calls: int = 0
    dr_missing: int = 0
    cdr_missing: int = 0


@dataclass(frozen=True)
class Behind:
    records: int
    oldest_seconds: float


def behind(
    highwater: int | None,
    position: int | None,
    processed_at: float | None,
    now: float,
    since: float,
) -> Behind | None:
    """A partition's lag: records from `position` (the next offset to process) to the log
    end, and the age of the oldest of them, at most `now` minus the time of the last record
    processed (or of the time this worker has held the partition, when it processed none
    yet). None when either end is not known."""
    if highwater is None or position is None:
        return None
    records = max(0, highwater - position)
    if not records:
        return Behind(0, 0.0)
    return Behind(records, max(0.0, now - (since if processed_at is None else processed_at)))


class WorkerMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry()
        self.build_info = release.build_info(registry)
        self.consumed = Counter(
            "nxcloud_worker_records", "Records consumed, by source topic", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.events = Counter("nxcloud_worker_events", "Call events emitted", registry=registry)
        self.repeats = Counter(
            "nxcloud_worker_repeats", "Records that merged to nothing (repeats)",
            registry=registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "nxcloud_worker_dead_letters", "Records sent to the dead-letter topic, by reason",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "nxcloud_worker_batch_seconds", "Time to process one batch, events acknowledged",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "nxcloud_worker_lag", "Records behind the log end, by source partition",
            ["topic", "partition"], registry=registry,
        )  # fmt: skip
        self.oldest = Gauge(
            "nxcloud_worker_oldest_unprocessed_seconds",
            "Age of the oldest record not yet processed (0 when none)", registry=registry,
        )  # fmt: skip
        self.rebalances = Counter(
            "nxcloud_worker_rebalances", "Rebalances this worker took part in", registry=registry
        )
        self.rebalance_seconds = Histogram(
            "nxcloud_worker_rebalance_seconds",
            "Time from a rebalance's start to the end of Faust's part of it",
            buckets=REBALANCE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.recovery_seconds = Gauge(
            "nxcloud_worker_recovery_seconds",
            "Time the last catch-up from the changelog took (assignment to ready)",
            registry=registry,
        )  # fmt: skip
        self.restored = Counter(
            "nxcloud_worker_restored_records",
            "Changelog records applied to the call store (catch-ups)", registry=registry,
        )  # fmt: skip
        self.restore_rate = Gauge(
            "nxcloud_worker_restore_records_per_second",
            "Changelog records applied per second by the last catch-up that read any",
            registry=registry,
        )  # fmt: skip
        self.calls = Gauge(
            "nxcloud_worker_calls", "Calls in state on the partitions this worker owns",
            registry=registry,
        )  # fmt: skip
        self.dr_missing = Gauge(
            "nxcloud_worker_calls_without_dr",
            "Calls with CDR rows but no DR past NXCLOUD_WORKER_DR_GRACE_SECONDS",
            registry=registry,
        )  # fmt: skip
        self.cdr_missing = Gauge(
            "nxcloud_worker_calls_without_cdr", "Calls with a DR but no CDR row after 24 h",
            registry=registry,
        )  # fmt: skip
        self.ready = Gauge(
            "nxcloud_worker_ready", "1 once the worker consumes its source topics",
            registry=registry,
        )  # fmt: skip
        self._topics: dict[str, Any] = {}
        self._reasons: dict[str, Any] = {}
        self.processed: dict[TP, tuple[int, float]] = {}
        self.held_since: dict[TP, float] = {}
        self._lag_labels: set[tuple[str, str]] = set()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        try:
            start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            reason = f"NXCLOUD_WORKER_METRICS_PORT: cannot serve on {port}: {exc}"
            raise ConfigError(reason) from None

    def batch(self, records: Sequence[EventT[bytes]], events: int, observed: int,
              started: float) -> None:  # fmt: skip
        """After a batch: `observed` of `records` were usable and merged into `events`."""
        self.batch_seconds.observe(time.perf_counter() - started)
        topics: Tally[str] = Tally()
        processed = self.processed
        for record in records:
            message = record.message
            topics[message.topic] += 1
            processed[message.tp] = (message.offset, message.timestamp)
        for topic, count in topics.items():
            child = self._topics.get(topic)
            if child is None:
                child = self._topics[topic] = self.consumed.labels(topic)
            child.inc(count)
        self.events.inc(events)
        self.repeats.inc(observed - events)

    def dead_letter(self, reason: str) -> None:
        label = reason_label(reason)
        child = self._reasons.get(label)
        if child is None:
            child = self._reasons[label] = self.dead_letters.labels(label)
        child.inc()

    def sample(
        self, highwaters: Mapping[TP, int | None], positions: Mapping[TP, int], now: float
    ) -> None:
        """Set the lag gauges of the source partitions held now from their log ends and
        read positions (`positions`: the consumer's, used until a record is processed)."""
        labels, oldest = set(), 0.0
        for tp, highwater in highwaters.items():
            since = self.held_since.setdefault(tp, now)
            processed = self.processed.get(tp)
            position = positions.get(tp) if processed is None else processed[0] + 1
            lag = behind(highwater, position, processed and processed[1], now, since)
            if lag is None:
                continue
            label = (tp.topic, str(tp.partition))
            labels.add(label)
            self.lag.labels(*label).set(lag.records)
            oldest = max(oldest, lag.oldest_seconds)
        for label in self._lag_labels - labels:
            self.lag.remove(*label)
        for tp in set(self.held_since) - set(highwaters):
            del self.held_since[tp]
        self._lag_labels = labels
        self.oldest.set(oldest)
        self.ready.set(1)

    def restored_from_changelog(self, records: int, seconds: float) -> None:
        """A catch-up from the changelog ended: `records` applied in `seconds`."""
        self.recovery_seconds.set(seconds)
        self.restored.inc(records)
        if records:
            self.restore_rate.set(records / max(seconds, 1e-3))

    def census(self, census: Census) -> None:
        self.calls.set(census.calls)
        self.dr_missing.set(census.dr_missing)
        self.cdr_missing.set(census.cdr_missing)


class Monitor(faust.Monitor):
    """The app's monitor (Faust's sensor of its own, called for every record several
    times): it keeps only what Faust's own slow-processing check reads (when a partition's
    stream last took a record) and, with metrics, counts rebalances and their time. Faust's
    in-memory statistics, read by its web views (off here), are not kept."""

    def __init__(self, metrics: WorkerMetrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        self.stream_inbound_time[tp] = time.monotonic()
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_send_initiated(
        self, producer: ProducerT, topic: str, message: PendingMessage, keysize: int, valsize: int
    ) -> Any:
        return None

    def on_send_completed(self, producer: ProducerT, state: Any, metadata: RecordMetadata) -> None:
        return None

    def on_rebalance_start(self, app: AppT) -> dict[str, Any]:
        state: dict[str, Any] = super().on_rebalance_start(app)
        if self.metrics is not None:
            self.metrics.rebalances.inc()
            self.metrics.processed.clear()  # another worker may have moved them on
        state["started"] = time.monotonic()
        return state

    def on_rebalance_end(self, app: AppT, state: dict[str, Any]) -> None:
        super().on_rebalance_end(app, state)
        if self.metrics is not None:
            self.metrics.rebalance_seconds.observe(time.monotonic() - state["started"])


def install(app: AppT, metrics: WorkerMetrics, sources: Iterable[str]) -> None:
    """A timer sampling the lag of the source partitions held."""
    topics = frozenset(sources)

    @app.timer(interval=SAMPLE_SECONDS)
    async def sample_lag() -> None:
        consumer = app.consumer
        held = [tp for tp in consumer.assignment() if tp.topic in topics]
        positions: Mapping[TP, int] = getattr(consumer, "next_offsets", {})
        metrics.sample({tp: consumer.highwater(tp) for tp in held}, positions, time.time())
