"""The CDR poller: pages every window of both services into the raw CDR topic.

Exactly one poller is active per account: every replica joins the consumer group
`nxcloud-poller.<account>` on the one-partition checkpoint topic, and only the member that
owns that partition polls. It reads the latest checkpoint, queries what is due, and moves
the checkpoint on only after the broker acknowledged every row of the window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from connector import admin, cdr, clients, groups, identity, release, schedule
from connector.clock import utcnow
from connector.errors import Malformed
from connector.ratelimit import TokenBucket
from connector.settings import Settings
from connector.topics import TopicNames

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class PollerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.build_info = release.build_info(self.registry)
        self.requests = Counter(
            "nxcloud_poller_requests", "CDR query requests by outcome", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.rows = Counter("nxcloud_poller_rows", "CDR rows stored", registry=self.registry)
        self.windows = Counter(
            "nxcloud_poller_windows", "Windows completed", ["kind"], registry=self.registry
        )
        self.credential_failures = Counter(
            "nxcloud_poller_credential_failures",
            "Refusals about credentials or the IP allow-list",
            registry=self.registry,
        )
        self.active = Gauge(
            "nxcloud_poller_active", "1 while this replica is the active poller",
            registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "nxcloud_poller_lag_seconds", "How far the oldest frontier is behind now",
            registry=self.registry,
        )  # fmt: skip


def cadence(settings: Settings) -> schedule.Cadence:
    return schedule.Cadence(
        window=timedelta(seconds=settings.poller_window_seconds),
        settle=timedelta(seconds=settings.poller_settle_seconds),
        repoll_after=tuple(timedelta(seconds=s) for s in settings.poller_repoll_after_seconds),
        first_lookback=timedelta(seconds=settings.poller_first_lookback_seconds),
    )


@dataclass
class CdrSource:
    """Fetches pages, within the rate limit, retrying until the provider answers."""

    settings: Settings
    http: httpx.AsyncClient
    bucket: TokenBucket
    metrics: PollerMetrics

    def form(self, window: cdr.Window, number: int) -> dict[str, str]:
        """The query of one page, with the credentials as their files hold them now (a
        rotated Secret is in the next request, a retry's included)."""
        appkey, secretkey = self.settings.credentials()
        return cdr.query_form(
            window,
            number,
            self.settings.poller_page_size,
            appkey=appkey.reveal(),
            secretkey=secretkey.reveal(),
            zone=self.settings.nxcloud_timezone,
        )

    async def page(self, window: cdr.Window, number: int) -> cdr.Page:
        attempt = 0
        while True:
            await self.bucket.take()
            outcome, pause = await self._ask(self.form(window, number))
            if isinstance(outcome, cdr.Page):
                self.metrics.requests.labels("ok").inc()
                return outcome
            attempt += 1
            backoff = min(60.0, 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)  # noqa: S311
            wait = max(pause, backoff)
            self.metrics.requests.labels(outcome).inc()
            log.warning(
                "cdr query not answered",
                extra={"outcome": outcome, "retry_in_s": round(wait, 1), "attempt": attempt,
                       "service": window.service, "page": number},
            )  # fmt: skip
            self.bucket.hold(wait)

    async def _ask(self, form: dict[str, str]) -> tuple[cdr.Page | str, float]:
        try:
            response = await self.http.post(self.settings.nxcloud_cdr_url, data=form)
        except httpx.TimeoutException:
            return "timeout", 0.0
        except httpx.DecodingError:
            return "malformed", 0.0
        except httpx.RequestError:
            return "connection_error", 0.0
        if response.status_code in RETRYABLE_STATUS:
            return f"http_{response.status_code}", _retry_after(response)
        if response.status_code != 200:
            return f"http_{response.status_code}", 0.0
        try:
            answer = cdr.parse_answer(response.content)
        except (Malformed, ValueError, TypeError, AttributeError, httpx.HTTPError):
            return "malformed", 0.0
        if isinstance(answer, cdr.Refusal):
            if answer.about_credentials:
                self.metrics.credential_failures.inc()
                log.error(
                    "cdr query refused: check NXCLOUD_APPKEY, NXCLOUD_SECRETKEY and that this "
                    "host's egress IP is on the provider's allow-list",
                    extra={"provider_message": self.settings.scrub(answer.message)},
                )
                return "refused_credentials", float(self.settings.poller_credentials_retry_seconds)
            return "refused", 0.0
        return answer, 0.0


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else 0.0


class Leadership(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, partition: TopicPartition) -> None:
        self.partition = partition
        self.leading = asyncio.Event()
        self.on_lost: Callable[[], Awaitable[None]] | None = None
        self.assigned = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.partition in revoked and self.assigned:
            self.assigned = False
            self.leading.clear()
            if self.on_lost is not None:
                await self.on_lost()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned = self.partition in assigned


class Poller:
    def __init__(
        self,
        settings: Settings,
        names: TopicNames,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime] = utcnow,
        metrics: PollerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.names = names
        self.clock = clock
        self.metrics = metrics or PollerMetrics()
        self.cadence = cadence(settings)
        self.bucket = TokenBucket(1000 / settings.poller_min_interval_ms)
        self.source = CdrSource(settings, http, self.bucket, self.metrics)
        self.account_key = settings.account.encode()
        self.partition = TopicPartition(names.poller_state, 0)

    def producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **clients.options(
                self.settings,
                client_id=f"nxcloud-poller.{self.settings.account}",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )
        )

    def membership(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **clients.options(
                self.settings,
                group_id=groups.poller(self.settings),
                client_id=groups.poller(self.settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Take part in the election; poll while elected; return once `stop` is set."""
        self.settings.credentials()
        producer, consumer = self.producer(), self.membership()
        leadership = Leadership(self.partition)
        work: asyncio.Task[None] | None = None

        async def step_down() -> None:
            nonlocal work
            self.metrics.active.set(0)
            if work is not None:
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                work = None
                log.info("stepped down as the active poller")

        leadership.on_lost = step_down
        consumer.subscribe([self.names.poller_state], listener=leadership)
        try:
            await producer.start()
            await consumer.start()
            latest: bytes | None = None
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=300)
                for record in batches.get(self.partition, []):
                    if record.key == self.account_key:
                        latest = record.value
                if work is not None and work.done():
                    work.result()
                if leadership.assigned and work is None and await self._caught_up(consumer):
                    if latest:
                        checkpoint = schedule.Checkpoint.from_json(latest)
                    else:
                        checkpoint = schedule.initial(self.clock(), self.cadence)
                        await producer.send_and_wait(
                            self.names.poller_state, checkpoint.to_json(), key=self.account_key
                        )
                    log.info("elected the active poller", extra={"account": self.settings.account})
                    self.metrics.active.set(1)
                    # The replica that led until now may have asked the provider just now.
                    self.bucket.hold(self.settings.poller_min_interval_ms / 1000)
                    work = asyncio.create_task(self._lead(checkpoint, producer))
        finally:
            await step_down()
            await admin.stop(consumer)
            await producer.stop()

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        end = (await consumer.end_offsets([self.partition]))[self.partition]
        return bool(await consumer.position(self.partition) >= end)

    async def _lead(self, checkpoint: schedule.Checkpoint, producer: AIOKafkaProducer) -> None:
        while True:
            now = self.clock()
            oldest = min(checkpoint.frontier.values())
            self.metrics.lag.set(max(0.0, (now - oldest).total_seconds()))
            task = schedule.next_task(checkpoint, now, self.cadence)
            if task is None:
                wait = (schedule.wake_at(checkpoint, self.cadence) - now).total_seconds()
                await asyncio.sleep(min(max(wait, 0.05), 5.0))
                continue
            if task.skipped > timedelta(0):
                log.error(
                    "cdr gap: older than the provider's 7-day limit, skipped",
                    extra={"service": task.window.service, "seconds": task.skipped.total_seconds()},
                )
            rows = await self.fetch(task.window, producer)
            checkpoint = schedule.complete(checkpoint, task, self.clock(), self.cadence)
            await producer.send_and_wait(
                self.names.poller_state, checkpoint.to_json(), key=self.account_key
            )
            self.metrics.windows.labels(task.kind).inc()
            log.info(
                "cdr window stored",
                extra={"kind": task.kind, "rows": rows, **task.window.as_json()},
            )

    async def fetch(
        self,
        window: cdr.Window,
        producer: AIOKafkaProducer,
        on_page: Callable[[int, int, int], None] | None = None,
    ) -> int:
        """Store every row of `window`; return once the broker acknowledged all of them."""
        deliveries = []
        number, pages = 1, 1
        while number <= pages:
            page = await self.source.page(window, number)
            pages = page.pages(self.settings.poller_page_size)
            fetched_at = self.clock()
            for row in page.rows:
                record = cdr.raw_record(row, window, number, fetched_at, self.settings.account)
                deliveries.append(
                    await producer.send(self.names.cdr_raw, record, key=identity.cdr_key(row))
                )
            if on_page is not None:
                on_page(pages, number, len(page.rows))
            number += 1
        await asyncio.gather(*deliveries)
        self.metrics.rows.inc(len(deliveries))
        return len(deliveries)


async def poll(settings: Settings, names: TopicNames | None = None) -> int:
    """The poller as a process: until SIGINT or SIGTERM, with its metrics endpoint."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await clients.check(settings)  # a refused login is one line, not a retry loop
    timeout = httpx.Timeout(settings.poller_http_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout) as http:
        poller = Poller(settings, names or TopicNames.of(settings), http)
        if settings.poller_metrics_port:
            start_http_server(
                settings.poller_metrics_port, settings.metrics_host, poller.metrics.registry
            )
        with clients.refusals(settings):
            await poller.run(stop)
    return 0
