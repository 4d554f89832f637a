"""Prometheus metrics of the receiver; one registry per app, never a secret in a label."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from connector import release
from connector.clock import LATENCY_BUCKETS


class ReceiverMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.build_info = release.build_info(self.registry)
        self.requests = Counter(
            "nxcloud_receiver_requests",
            "DR pushes answered, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.publish_latency = Histogram(
            "nxcloud_receiver_publish_seconds",
            "Time from a push to its durable storage, by where it was stored",
            ["stored_in"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "nxcloud_receiver_spool_depth",
            "Records in the spool waiting for Kafka",
            registry=self.registry,
        )
        self.spool_bytes = Gauge(
            "nxcloud_receiver_spool_bytes", "Bytes used by the spool", registry=self.registry
        )
        self.spool_max_bytes = Gauge(
            "nxcloud_receiver_spool_max_bytes", "NXCLOUD_SPOOL_MAX_BYTES: the spool's capacity",
            registry=self.registry,
        )  # fmt: skip
        self.kafka_up = Gauge(
            "nxcloud_receiver_kafka_up",
            "1 while pushes go straight to Kafka, 0 while they go to the spool",
            registry=self.registry,
        )
        self.drained = Counter(
            "nxcloud_receiver_spool_drained",
            "Records moved from the spool to Kafka",
            registry=self.registry,
        )

        self.dead_lettered = Counter(
            "nxcloud_receiver_dead_lettered",
            "Records Kafka refused for good, set aside and reported, by error",
            ["error"],
            registry=self.registry,
        )
        self.corrupt_frames = Counter(
            "nxcloud_receiver_spool_corrupt_frames",
            "Damaged spans of the spool quarantined and reported",
            registry=self.registry,
        )
        self.corrupt_bytes = Counter(
            "nxcloud_receiver_spool_corrupt_bytes",
            "Bytes of the spool quarantined as damaged",
            registry=self.registry,
        )

        self.connections = Gauge(
            "nxcloud_receiver_connections",
            "Connections open on the push port (TLS handshakes included)",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "nxcloud_receiver_connections_refused",
            "Connections to the push port closed at once: NXCLOUD_RECEIVER_MAX_CONNECTIONS open",
            registry=self.registry,
        )
        self.management_connections = Gauge(
            "nxcloud_receiver_management_connections",
            "Connections open on the management port",
            registry=self.registry,
        )
        self.management_refused = Counter(
            "nxcloud_receiver_management_connections_refused",
            "Connections to the management port closed at once:"
            " NXCLOUD_RECEIVER_MANAGEMENT_MAX_CONNECTIONS open",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
