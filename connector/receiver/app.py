"""The DR receiver: a thin Starlette app that stores every push before it answers.

`success` means the push is in Kafka, acknowledged by all in-sync replicas, or fsync'd
in the local spool on its way there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from connector import clients, deadletters, dr, head, identity
from connector.clock import utcnow
from connector.errors import Refused, SpoolError
from connector.guard import (
    client_address,
    network_ok,
    scrub,
    target_token,
    token_ok,
)
from connector.receiver.gate import Gate, locked_reason
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.protocol import (
    LISTENER,
    MANAGEMENT,
    METRICS,
    PUSH,
    PUSH_GATE,
    REFUSED,
    EdgeProtocol,
    Limits,
    ManagementProtocol,
)
from connector.receiver.publisher import Publisher, Readiness, Store, new_producer
from connector.receiver.push import Push, Reader
from connector.receiver.spool import Spool
from connector.receiver.tls import Certificate
from connector.settings import Settings
from connector.topics import TopicNames

log = logging.getLogger(__name__)

DR_PATH = "/nxcloud/voice/dr"
StoreFactory = Callable[[Settings, ReceiverMetrics], AbstractAsyncContextManager[Store]]


def answer(ok: bool, status: int, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse("success" if ok else "error", status_code=status, headers=headers)


def edge(settings: Settings) -> type[EdgeProtocol]:
    """The push port's HTTP protocol (uvicorn's `http`): limits from settings, TLS when its
    files are set (ConfigError naming the variable when they cannot be used)."""
    cert_file, key_file = settings.receiver_tls_cert_file, settings.receiver_tls_key_file
    tls = Certificate(cert_file, key_file) if cert_file and key_file else None

    class ReceiverProtocol(EdgeProtocol):
        limits = edge_limits(settings)
        refusal_path = DR_PATH
        gate = Gate(settings.receiver_max_connections)
        certificate = tls

    return ReceiverProtocol


def management_edge(settings: Settings) -> type[ManagementProtocol]:
    """The management port's HTTP protocol: the push port's head limits, a cap of its own."""

    class Management(ManagementProtocol):
        limits = edge_limits(settings)
        gate = Gate(settings.receiver_management_max_connections)

    return Management


def edge_limits(settings: Settings) -> Limits:
    return Limits(
        head_bytes=settings.receiver_max_head_bytes,
        headers=settings.receiver_max_headers,
        head_seconds=settings.receiver_head_timeout_seconds,
        raw_bytes=settings.receiver_max_body_bytes,
    )


def is_dr_path(path: str) -> bool:
    return path == DR_PATH or path.startswith(DR_PATH + "/")


class ListenerRoutes:
    """The push port reaches the DR path and nothing else; the management port everything
    but the DR path. Anything else is answered `error` (404) and counted. A request from
    neither listener (the app served by plain uvicorn, as some tests do) reaches all."""

    def __init__(self, app: ASGIApp, metrics: ReceiverMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            listener = scope.get("extensions", {}).get(LISTENER, {}).get("name")
            dr_path = is_dr_path(scope["path"])
            if (listener == PUSH and not dr_path) or (listener == MANAGEMENT and dr_path):
                self.metrics.requests.labels("not_found").inc()
                await answer(False, 404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AnyMethod:
    """An endpoint every method reaches (Starlette's routes answer others 405 themselves)."""

    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(handle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@dataclass
class DrEndpoint:
    settings: Settings
    names: TopicNames
    metrics: ReceiverMetrics
    clock: Callable[[], datetime]
    publisher: Store | None = None

    in_flight: int = 0

    def __post_init__(self) -> None:
        self.reader = Reader(self.settings, self.clock)

    async def handle(self, request: Request) -> Response:
        self.in_flight += 1
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: Request) -> Response:
        refused = request.scope.get("extensions", {}).get(REFUSED)
        if refused is not None:
            return await self._unreadable(request, refused)
        settings = self.settings
        peer = request.client.host if request.client else None
        address = client_address(
            peer, request.headers.getlist("x-forwarded-for"), settings.receiver_trusted_proxies
        )
        expected = settings.receiver_token.reveal() if settings.receiver_token else None
        presented = None
        if expected is not None:
            presented = request.path_params.get("token") or request.query_params.get("token")
        if not token_ok(expected, presented) or not network_ok(
            address, settings.receiver_allow_networks
        ):
            self.metrics.requests.labels("forbidden").inc()
            return answer(False, 403)
        if request.method == "HEAD":
            self.metrics.requests.labels("refused_405").inc()
            return answer(False, 405, {"allow": "GET, POST"})
        push, stopped = await self.reader.read(request, str(address) if address else "")
        if stopped is not None:
            return await self._refuse(stopped, push)
        assert push.fields is not None  # read() stops at a push without valid fields
        return await self._store(
            identity.dr_key(push.fields), dr.raw_record(push.fields, push.arrival)
        )

    async def _unreadable(self, request: Request, refused: dict[str, Any]) -> Response:
        """A request the HTTP edge could not read: its raw bytes go to the dead letters."""
        settings = self.settings
        peer = request.client.host if request.client else None
        address = client_address(peer, (), settings.receiver_trusted_proxies)
        proxied = address is not None and network_ok(address, settings.receiver_trusted_proxies)
        raw: bytes = refused["raw"]
        token = settings.receiver_token
        presented = target_token(head.target(raw), DR_PATH.encode()) if token else None
        if token is not None and not token_ok(token.reveal(), presented):
            self.metrics.requests.labels("forbidden").inc()
            return answer(False, 403)
        if settings.receiver_trusted_proxies and proxied:
            address = None
        elif not network_ok(address, settings.receiver_allow_networks):
            self.metrics.requests.labels("forbidden").inc()
            return answer(False, 403)
        status: int = refused["status"]
        arrival = self.reader.arrival(head.method(raw), str(address) if address else "", "")
        reason = self._scrub(str(refused["reason"]).encode()).decode()
        record = deadletters.refused_push(
            reason, arrival, None, request=self._scrub(raw), limit=len(raw)
        )
        log.info("request unreadable", extra={"status": status, "receipt_id": arrival.receipt_id})
        log.debug("request unreadable", extra={"reason": reason})
        return await self._publish(
            self.names.dead_letter, None, record, f"unreadable_{status}", answer(False, status)
        )

    def _scrub(self, data: bytes) -> bytes:
        token = self.settings.receiver_token
        return scrub(data, token.reveal() if token else None)

    async def _store(self, key: bytes, record: bytes) -> Response:
        return await self._publish(self.names.dr_raw, key, record, "success", answer(True, 200))

    async def _refuse(self, refused: Refused, push: Push) -> Response:
        body = None if refused.body is None else self._scrub(refused.body)
        reason = self._scrub(refused.reason.encode()).decode()
        record = deadletters.refused_push(
            reason,
            push.arrival,
            push.fields,
            body,
            query=self._scrub(push.query),
            limit=self.settings.receiver_max_body_bytes,
        )
        receipt_id = push.arrival.receipt_id
        log.info("push refused", extra={"status": refused.status, "receipt_id": receipt_id})
        log.debug("push refused", extra={"reason": reason})
        headers = {"allow": "GET, POST"} if refused.status == 405 else None
        return await self._publish(
            self.names.dead_letter,
            None,
            record,
            f"refused_{refused.status}",
            answer(False, refused.status, headers),
        )

    async def _publish(
        self, topic: str, key: bytes | None, record: bytes, outcome: str, reply: Response
    ) -> Response:
        """Store `record` and give `reply`, or 503 when neither Kafka nor the spool can."""
        assert self.publisher is not None
        try:
            await self.publisher.publish(topic, key, record)
        except SpoolError as exc:
            log.error("record not stored", extra={"reason": str(exc), "topic": topic})
            self.metrics.requests.labels("unavailable").inc()
            return answer(False, 503)
        self.metrics.requests.labels(outcome).inc()
        return reply


@dataclass
class Locked:
    """Whether the push port is locked shut (`gate.locked_reason`), logged once each time it
    becomes so; the gate is the push listener's, which the server puts in the app's state."""

    settings: Settings
    endpoint: DrEndpoint
    told: bool = False

    def reason(self, request: Request) -> str | None:
        listener = request.scope.get("state", {}).get(PUSH_GATE)
        if listener is None:
            return None
        gate, loop_time, tls = listener
        why = locked_reason(
            gate, loop_time(), self.endpoint.in_flight, self.settings.receiver_locked_seconds, tls
        )
        if why is not None and not self.told:
            log.error("push port locked shut, not live", extra={"reason": why})
        elif why is None and self.told:
            log.info("push port accepting connections again")
        self.told = why is not None
        return why


def kafka_store(settings: Settings, metrics: ReceiverMetrics) -> AbstractAsyncContextManager[Store]:
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    timeout = settings.receiver_kafka_timeout_ms / 1000
    clients.security(settings)  # a certificate that cannot load fails at start

    def producer(bootstrap_servers: str) -> AIOKafkaProducer:
        # Each new producer reads the credentials again: a rotated mounted Secret applies.
        return new_producer(bootstrap_servers, **clients.security(settings))

    async def explain(exc: BaseException) -> str | None:
        return await clients.refusal(exc, settings)

    return Publisher(
        settings.kafka_bootstrap_servers,
        spool,
        timeout,
        metrics,
        producer,
        dead_letter_topic=TopicNames.of(settings).dead_letter,
        receiver_id=settings.receiver_id,
        explain=explain,
        credentials=clients.tls_files(settings).stamp,
    )


def create_app(
    settings: Settings,
    names: TopicNames | None = None,
    clock: Callable[[], datetime] = utcnow,
    store: StoreFactory = kafka_store,
) -> Starlette:
    metrics = ReceiverMetrics()
    metrics.spool_max_bytes.set(settings.spool_max_bytes)
    endpoint = DrEndpoint(settings, names or TopicNames.of(settings), metrics, clock)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        async with store(settings, metrics) as opened:
            endpoint.publisher = opened
            # the push port's protocol counts its connections here
            yield {METRICS: metrics}
            endpoint.publisher = None

    locked = Locked(settings, endpoint)

    async def healthz(request: Request) -> Response:
        reason = locked.reason(request)
        if reason is not None:
            return PlainTextResponse(f"not live: {reason}", status_code=503)
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        publisher = endpoint.publisher
        state = await publisher.readiness() if publisher else Readiness(False, "starting")
        reason = locked.reason(request)
        if reason is not None:
            state = Readiness(False, reason)
        if state.ok:
            return PlainTextResponse("ready")
        return PlainTextResponse(f"not ready: {state.reason}", status_code=503)

    async def metrics_page(_request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            *(
                Route(path, AnyMethod(endpoint.handle))
                for path in (DR_PATH, DR_PATH + "/", DR_PATH + "/{token:path}")
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        middleware=[Middleware(ListenerRoutes, metrics=metrics)],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    return app
