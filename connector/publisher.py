"""Durable storage of records: Kafka first, the local spool when Kafka cannot take them.

While anything is spooled, new records are spooled too, so the spool drains to Kafka in
the order records arrived; once it is empty, records go straight to Kafka again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connector.errors import SpoolError
from connector.metrics import ReceiverMetrics
from connector.spool import Spool

log = logging.getLogger(__name__)

DRAIN_BATCH = 500
REFUSED_RETRY_SECONDS = 30.0


class StoredIn(enum.Enum):
    KAFKA = "kafka"
    SPOOL = "spool"


class Store(Protocol):
    """Where the receiver puts records; `Publisher` is the real one."""

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> StoredIn: ...

    async def ready(self) -> bool: ...

    @property
    def refusal(self) -> str | None:
        """Why Kafka refuses this client (login, TLS, ACL), while it does."""
        ...


Explain = Callable[[BaseException], Awaitable[str | None]]


async def _no_explanation(_exc: BaseException) -> str | None:
    return None


def new_producer(bootstrap_servers: str, **security: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **security,
        client_id="nxcloud-receiver",
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15000,
        retry_backoff_ms=100,
    )


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        spool: Spool,
        kafka_timeout: float,
        metrics: ReceiverMetrics,
        producer_factory: Callable[[str], AIOKafkaProducer] = new_producer,
        *,
        explain: Explain = _no_explanation,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._spool = spool
        self._timeout = kafka_timeout
        self._metrics = metrics
        self._factory = producer_factory
        self._explain = explain
        self._refusal: str | None = None
        self._producer: AIOKafkaProducer | None = None
        self._direct = False
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def kafka_up(self) -> bool:
        return self._direct

    @property
    def refusal(self) -> str | None:
        return self._refusal

    async def _note_refusal(self, exc: BaseException) -> None:
        refusal = await self._explain(exc)
        if refusal is not None and refusal != self._refusal:
            log.error("kafka refuses the receiver, spooling", extra={"reason": refusal})
        self._refusal = refusal

    async def __aenter__(self) -> Publisher:
        self._spool.open()
        self._update_gauges()
        await self._connect()
        self._direct = self._producer is not None and self._spool.empty()
        self._metrics.kafka_up.set(int(self._direct))
        self._drainer = asyncio.create_task(self._drain_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._producer is not None:
            # Deliveries still pending here timed out and were spooled: nothing waits on them.
            try:
                async with asyncio.timeout(self._timeout * 5):
                    await self._producer.stop()
            except TimeoutError:
                log.warning("kafka producer did not stop in time")

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> StoredIn:
        """Store the record durably; raise SpoolError when neither Kafka nor the spool can."""
        started = time.perf_counter()
        stored = StoredIn.SPOOL
        producer = self._producer
        if self._direct and producer is not None:
            try:
                await self._send(producer, topic, key, value)
                stored = StoredIn.KAFKA
            except (KafkaError, TimeoutError) as exc:
                self._fall_back(exc)  # the drain loop finds out whether Kafka refuses us
        if stored is StoredIn.SPOOL:
            await self._spool.append(topic, key, value)
            self._wake.set()
            self._update_gauges()
        self._metrics.publish_latency.labels(stored.value).observe(time.perf_counter() - started)
        return stored

    async def _send(
        self, producer: AIOKafkaProducer, topic: str, key: bytes | None, value: bytes
    ) -> None:
        async with asyncio.timeout(self._timeout):
            delivery: asyncio.Future[object] = await producer.send(topic, value, key=key)
            await asyncio.shield(delivery)

    def _fall_back(self, exc: BaseException) -> None:
        if self._direct:
            log.warning(
                "kafka unavailable, spooling",
                extra={"error": type(exc).__name__},
            )
        self._direct = False
        self._metrics.kafka_up.set(0)
        self._wake.set()

    async def _connect(self) -> None:
        if self._producer is not None:
            return
        producer = self._factory(self._bootstrap)
        try:
            async with asyncio.timeout(self._timeout * 5):
                await producer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            await _quietly(producer.stop())
            log.warning("kafka not reachable", extra={"error": type(exc).__name__})
            await self._note_refusal(exc)
            return
        self._producer = producer
        self._refusal = None

    async def _drain_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._producer is None:
                    await self._connect()
                    if self._producer is None:
                        raise TimeoutError("kafka not reachable")
                if self._spool.depth == 0:
                    self._idle()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._drain_once(self._producer)
                backoff = 0.1
            except (KafkaError, TimeoutError, OSError) as exc:
                log.debug("drain attempt failed", extra={"error": type(exc).__name__})
                await self._note_refusal(exc)
                # A refusal lasts until someone fixes a setting or an ACL: ask rarely.
                delay = REFUSED_RETRY_SECONDS if self._refusal else backoff
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
                backoff = min(backoff * 2, 5.0)

    def _idle(self) -> None:
        """Nothing left to drain: once nothing is on its way to the spool either, go direct."""
        if not self._direct and self._spool.empty():
            self._direct = True
            self._refusal = None
            self._metrics.kafka_up.set(1)
            log.info("kafka available, storing directly")

    async def _drain_once(self, producer: AIOKafkaProducer) -> None:
        entries = await self._spool.oldest(DRAIN_BATCH)
        if not entries:
            raise OSError("spool reports records but none could be read")
        async with asyncio.timeout(max(self._timeout * 5, 10)):
            deliveries = [
                await producer.send(entry.topic, entry.value, key=entry.key) for entry in entries
            ]
            await asyncio.gather(*(asyncio.shield(d) for d in deliveries))
        await self._spool.mark_drained(entries[-1], len(entries))
        self._metrics.drained.inc(len(entries))
        self._update_gauges()

    def _update_gauges(self) -> None:
        self._metrics.spool_depth.set(self._spool.depth)
        self._metrics.spool_bytes.set(self._spool.bytes_used)

    async def ready(self) -> bool:
        if self._refusal is not None:
            return False
        return self._direct or self._spool.usable()


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("ignored error while closing", exc_info=True)


__all__ = ["Publisher", "SpoolError", "Store", "StoredIn", "new_producer"]
