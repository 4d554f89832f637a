"""Durable storage of records: Kafka first, the local spool when Kafka cannot take them.

While anything is spooled, new records are spooled too, so the spool drains to Kafka in
the order records arrived; once it is empty, records go straight to Kafka again. A record
Kafka refuses for good is set aside on disk and reported on the dead-letter topic; the
drain goes on. A drain never sends again what the producer may still deliver: it waits on
every send in flight (the idempotent producer retries them itself) and sends again only
what failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connector import deadletters, delivery
from connector.delivery import Outcome, classify
from connector.errors import SpoolError
from connector.frames import Damage, Entry
from connector.outage import Outage
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.spool import Spool
from connector.receiver.states import Blockers, InHand, Line, Mode, Readiness, Sending, StoredIn

log = logging.getLogger(__name__)

DRAIN_BATCH = 500
DRAIN_BYTES = 4 << 20
REFUSED_RETRY_SECONDS = 30.0
STALLED_SECONDS = 5
ROOM_FOR_A_PUSH = 256 << 10


class Store(Protocol):
    """Where the receiver puts records; `Publisher` is the real one."""

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> StoredIn: ...

    async def readiness(self) -> Readiness: ...


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
        dead_letter_topic: str = "nxcloud.voice.dead-letter",
        receiver_id: str = "",
        explain: Explain = _no_explanation,
        credentials: Callable[[], object] = lambda: None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._spool = spool
        self._timeout = kafka_timeout
        self._metrics = metrics
        self._factory = producer_factory
        self._dead_letter = dead_letter_topic
        self._receiver = receiver_id
        self._explain = explain
        self._credentials = credentials
        self._asked_at = -REFUSED_RETRY_SECONDS
        self._line: Line | None = None
        self._mode = Mode.SPOOLING
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._outage = Outage(log)
        self._blockers = Blockers()
        self._in_hand: InHand | None = None

    async def _note_refusal(self, exc: BaseException) -> None:
        refusal = await self._explain(exc)
        if self._blockers.refused(refusal):
            log.error("kafka refuses the receiver, spooling", extra={"reason": refusal})

    async def __aenter__(self) -> Publisher:
        self._spool.open()
        self._update_gauges()
        await self._connect()
        if self._line is not None and self._spool.empty():
            self._go_direct()
        else:
            self._metrics.kafka_up.set(0)
        self._drainer = asyncio.create_task(self._drain_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._line is not None:
            # Deliveries still pending here timed out and were spooled: nothing waits on them.
            try:
                async with asyncio.timeout(self._timeout * 5):
                    await self._line.producer.stop()
            except TimeoutError:
                log.warning("kafka producer did not stop in time")

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> StoredIn:
        """Store the record durably; raise SpoolError when neither Kafka nor the spool can."""
        started = time.perf_counter()
        stored = StoredIn.SPOOL
        line = self._line
        if self._mode is Mode.DIRECT and line is not None:
            try:
                await self._send(line.producer, topic, key, value)
                stored = StoredIn.KAFKA
            except Exception as exc:
                line.spent |= delivery.breaks_producer(exc)
                if classify(exc) is Outcome.UNAVAILABLE:
                    self._go_spooling(exc)
                    if delivery.denied(exc):  # not ready from now on, naming the ACL
                        await self._note_refusal(exc)
                else:
                    # The producer may have refused a whole batch for one record in it:
                    # the drain sends again alone what was refused, and sets aside the culprit.
                    log.info("refused by kafka, spooled", extra={"error": delivery.reason(exc)})
                    self._mode = Mode.SPOOLING
        if stored is StoredIn.SPOOL:
            await self._to_spool(topic, key, value)
        self._metrics.publish_latency.labels(stored.value).observe(time.perf_counter() - started)
        return stored

    async def _send(
        self, producer: AIOKafkaProducer, topic: str, key: bytes | None, value: bytes
    ) -> None:
        async with asyncio.timeout(self._timeout):
            delivery_: asyncio.Future[object] = await producer.send(topic, value, key=key)
            await asyncio.shield(delivery_)

    async def _to_spool(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self._spool.append(topic, key, value)
        self._wake.set()
        self._update_gauges()

    def _go_spooling(self, exc: BaseException) -> None:
        """DIRECT -> SPOOLING: Kafka did not take a push; the drain takes over."""
        self._outage.failed(exc, self._spool.depth)
        self._mode = Mode.SPOOLING
        self._metrics.kafka_up.set(0)
        self._wake.set()

    def _go_direct(self) -> None:
        """SPOOLING -> DIRECT: nothing is spooled nor on its way to the spool."""
        self._mode = Mode.DIRECT
        self._blockers.accepted()
        self._metrics.kafka_up.set(1)

    async def _set_aside(self, entry: Entry, exc: BaseException) -> None:
        """Keep a record Kafka refused on disk and report it on the dead-letter topic."""
        why = delivery.reason(exc)
        kept = await self._spool.set_aside(entry)
        self._metrics.dead_lettered.labels(type(exc).__name__).inc()
        log.warning(
            "record refused by kafka, set aside",
            extra={"reason": why, "topic": entry.topic, "bytes": len(entry.value),
                   "kept": str(kept)},
        )  # fmt: skip
        if entry.topic == self._dead_letter:
            return
        report = deadletters.refused_by_kafka(why, entry, kept=kept, receiver=self._receiver)
        await self._to_spool(self._dead_letter, None, report)

    async def _connect(self) -> None:
        if self._line is not None:
            return
        built_with = self._credentials()
        producer = self._factory(self._bootstrap)
        try:
            async with asyncio.timeout(self._timeout * 5):
                await producer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            await _quietly(producer.stop())
            self._outage.failed(exc, self._spool.depth)
            await self._note_refusal(exc)
            return
        self._line = Line(producer, built_with)
        self._blockers.accepted()

    async def _drain_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._line is not None and self._line.spent:
                    await self._renew()
                if self._line is None:
                    await self._connect()
                    if self._line is None:
                        raise TimeoutError("kafka not reachable")
                if self._spool.depth == 0:
                    self._idle()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._drain_once()
                self._blockers.drained()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (KafkaError, TimeoutError) as exc:
                self._outage.failed(exc, self._spool.depth)
                await self._note_refusal(exc)
                if self._rotated():
                    continue
                # A refusal lasts until someone fixes a setting or an ACL: ask rarely.
                await self._pause(REFUSED_RETRY_SECONDS if self._blockers.refusal else backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                self._wedge(exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _refused_meanwhile(self, exc: BaseException) -> bool:
        """A producer that started may still be refused (a token aiokafka took for a login,
        an ACL removed): on the first failure of a drain, then every 30 s, ask why."""
        now = time.monotonic()
        if self._blockers.refusal is None and now - self._asked_at < REFUSED_RETRY_SECONDS:
            return False
        self._asked_at = now
        await self._note_refusal(exc)
        return self._blockers.refusal is not None

    def _rotated(self) -> bool:
        """While Kafka fails this producer: when a mounted credential changed since it was
        built, a new producer (built with the new one) takes over at the next attempt."""
        line = self._line
        if line is None:
            return False
        spent = line.spent
        if not line.rotated(self._credentials()):
            return False
        if not spent:
            log.info("kafka credentials changed, reconnecting with them")
        return True

    def _wedge(self, exc: BaseException) -> None:
        if self._blockers.wedge(delivery.reason(exc)):
            log.error("spool cannot drain", exc_info=exc)
        self._in_hand = None
        self._spool.rewind()

    async def _pause(self, backoff: float) -> None:
        await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311

    def _idle(self) -> None:
        """Nothing left to drain: once nothing is on its way to the spool either, go direct."""
        if self._mode is Mode.SPOOLING and self._spool.empty():
            self._go_direct()
            self._outage.ended(self._spool.depth)

    async def _renew(self) -> None:
        """Replace the producer (a new producer id, fresh sequence numbers)."""
        old, self._line = self._line, None
        if old is not None:
            try:
                async with asyncio.timeout(self._timeout * 5):
                    await old.producer.stop()
            except Exception:
                log.debug("ignored error while stopping a broken producer", exc_info=True)
        await self._connect()
        if self._line is None:
            raise TimeoutError("kafka not reachable")

    async def _drain_once(self) -> None:
        """Read a batch (unless one is still on its way), deliver it, acknowledge it.

        A batch stays in hand until acknowledged, with what is left to deliver, so a
        failure part way never skips records and never sends again what went through."""
        in_hand = self._in_hand
        if in_hand is None:
            batch = await self._spool.read(DRAIN_BATCH, DRAIN_BYTES)
            if not batch.entries and not batch.damage:
                raise SpoolError("spool reports records but none could be read")
            for damage in batch.damage:
                await self._report(damage)
            in_hand = self._in_hand = InHand(batch, list(batch.entries))
        await self._deliver(in_hand)
        self._in_hand = None
        await self._spool.acknowledge(in_hand.batch)
        self._metrics.drained.inc(len(in_hand.batch.entries))
        self._update_gauges()
        self._outage.ended(self._spool.depth)

    async def _report(self, damage: Damage) -> None:
        self._metrics.corrupt_frames.inc()
        self._metrics.corrupt_bytes.inc(damage.size)
        log.error(
            "corrupt spool frame quarantined",
            extra={"segment": damage.segment, "offset": damage.start, "bytes": damage.size,
                   "kept": str(damage.kept)},
        )  # fmt: skip
        await self._spool.append(
            self._dead_letter, None, deadletters.spool_damage(damage, self._receiver)
        )

    async def _deliver(self, in_hand: InHand) -> None:
        """Every undelivered entry in Kafka or set aside; only failed sends are sent again."""
        backoff = 0.1
        while in_hand.undelivered:
            if self._line is None or self._line.spent:
                await self._renew()
            line = self._line
            assert line is not None
            sending = in_hand.next_send()
            failures = await self._send_all(line, sending)
            line.spent |= any(e is not None and delivery.breaks_producer(e) for e in failures)
            failed = [(e, x) for e, x in zip(sending, failures, strict=True) if x is not None]
            refused = [(e, x) for e, x in failed if classify(x) is Outcome.REFUSED]
            if refused and len(sending) == 1:
                await self._set_aside(*refused[0])
                failed = []
            elif refused:
                in_hand.sending = Sending.ONE_BY_ONE
            in_hand.undelivered = [e for e, _ in failed] + in_hand.undelivered[len(sending) :]
            unavailable = [x for _, x in failed if classify(x) is Outcome.UNAVAILABLE]
            denied = [x for x in unavailable if delivery.denied(x)]
            if denied:  # until an ACL is granted: the drain says why, and asks rarely
                raise denied[0]
            if unavailable:
                self._outage.failed(unavailable[0], self._spool.depth)
                self._rotated()
                if await self._refused_meanwhile(unavailable[0]):
                    raise KafkaError(self._blockers.refusal)
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _send_all(self, line: Line, entries: list[Entry]) -> list[BaseException | None]:
        """Send each entry and wait on every delivery, however long the producer retries.

        An entry whose send() failed was never handed to the producer. Once one fails as
        unavailable, the rest are not tried (each would wait for metadata in turn)."""
        producer = line.producer
        deliveries: list[asyncio.Future[object] | BaseException] = []
        for entry in entries:
            last = deliveries[-1] if deliveries else None
            if isinstance(last, BaseException) and classify(last) is Outcome.UNAVAILABLE:
                deliveries.append(last)
                continue
            try:
                deliveries.append(await producer.send(entry.topic, entry.value, key=entry.key))
            except Exception as exc:
                deliveries.append(exc)
        sent = [d for d in deliveries if not isinstance(d, BaseException)]
        waiting, stalled = set(sent), 0
        while waiting:
            done, waiting = await asyncio.wait(waiting, timeout=1.0)
            stalled = 0 if done else stalled + 1
            if waiting and _sender_stopped(producer):
                line.spent = True
                raise KafkaError("the producer's sender stopped")
            if waiting and stalled >= STALLED_SECONDS and self._rotated():
                # It logs in with what was mounted when it was built, and fails: a new one.
                raise KafkaError("kafka credentials changed while the producer was stalled")
        outcomes = iter(await asyncio.gather(*sent, return_exceptions=True))
        return [d if isinstance(d, BaseException) else _failure(next(outcomes)) for d in deliveries]

    def _update_gauges(self) -> None:
        self._metrics.spool_depth.set(self._spool.depth)
        self._metrics.spool_bytes.set(self._spool.bytes_used)

    async def readiness(self) -> Readiness:
        spool = self._spool
        if self._drainer is None or self._drainer.done():
            return Readiness(False, "the spool drain is not running")
        blocked = self._blockers.readiness()
        if blocked is not None:
            return blocked
        if self._mode is Mode.DIRECT:
            return Readiness(True, "ready")
        if not spool.writable():
            return Readiness(False, "the spool directory is not writable")
        if spool.room() < min(ROOM_FOR_A_PUSH, spool.max_bytes // 4):
            return Readiness(
                False, f"the spool is full: {spool.bytes_used} of {spool.max_bytes} bytes used"
            )
        return Readiness(True, "ready")


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return isinstance(task, asyncio.Task) and task.done()


def _failure(outcome: object) -> BaseException | None:
    return outcome if isinstance(outcome, BaseException) else None


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("ignored error while closing", exc_info=True)


__all__ = ["Publisher", "Readiness", "SpoolError", "Store", "StoredIn", "new_producer"]
