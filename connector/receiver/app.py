"""The DR receiver: a thin Starlette app that stores every push before it answers.

`success` means the push is in Kafka, acknowledged by all in-sync replicas, or fsync'd
in the local spool on its way there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from connector import clients, deadletters, dr, head, identity
from connector.clock import utcnow
from connector.errors import Invalid, Refused, SpoolError
from connector.guard import (
    REDACTED,
    client_address,
    network_ok,
    scrub,
    target_token,
    token_ok,
)
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.protocol import (
    BODY_ERROR,
    LISTENER,
    MANAGEMENT,
    METRICS,
    PUSH,
    REFUSED,
    TARGET,
    EdgeProtocol,
    Gate,
    Limits,
)
from connector.receiver.publisher import Publisher, Readiness, Store, new_producer
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
        limits = Limits(
            head_bytes=settings.receiver_max_head_bytes,
            headers=settings.receiver_max_headers,
            head_seconds=settings.receiver_head_timeout_seconds,
            raw_bytes=settings.receiver_max_body_bytes,
        )
        refusal_path = DR_PATH
        gate = Gate(settings.receiver_max_connections)
        certificate = tls

    return ReceiverProtocol


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


async def read_body(request: Request, limit: int, patience: float) -> bytes:
    """The body, refusing it as soon as it exceeds `limit`, arrives too slowly or is cut off;
    the refusal keeps what arrived."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and declared.isascii() and int(declared) > limit:
        raise Refused(413, f"body of {declared} bytes exceeds the {limit}-byte limit", b"")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(patience):
            async for chunk in request.stream():
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    body = b"".join(chunks)[:limit]
                    raise Refused(413, f"body exceeds the {limit}-byte limit", body)
    except TimeoutError:
        body = b"".join(chunks)
        raise Refused(408, f"body not received within {patience:g} s", body) from None
    except ClientDisconnect:
        body = b"".join(chunks)
        raise Refused(400, f"body cut off after {size} bytes: client gone", body) from None
    body = b"".join(chunks)
    cut = request.scope.get("extensions", {}).get(BODY_ERROR)
    if cut is not None:
        raise Refused(400, f"body cut off after {size} bytes: {cut['reason']}", body)
    return body


async def body_fields(
    headers: Headers, body: bytes, max_fields: int, charset: str
) -> tuple[dr.Fields, int]:
    """The body's fields and how many there were."""
    if not body:
        return {}, 0
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        fields = await _multipart(headers, body, max_fields)
        return fields, len(fields)
    pairs = dr.split_form(body, max_fields)
    return dr.decode_form(pairs, charset), len(pairs)


class StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, refusing a value its charset cannot decode (instead of Latin-1)."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            charset = self._charset or "utf-8"
            try:
                bytes(part.data).decode(charset)
            except (UnicodeDecodeError, LookupError):
                raise Invalid(f"field {part.field_name[:40]!r} is not valid {charset}") from None
        super().on_part_end()


async def _multipart(headers: Headers, body: bytes, max_fields: int) -> dr.Fields:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = StrictMultiPartParser(headers, stream(), max_files=0, max_fields=max_fields)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Invalid(f"unreadable multipart body: {exc.message}") from None
    fields: dr.Fields = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise Invalid(f"unexpected file in field {name!r}")
        fields[name] = value
    return fields


def raw_query(scope: Scope) -> bytes:
    """The query string exactly as sent (the edge has %-encoded raw spaces for the parser)."""
    sent = scope.get("extensions", {}).get(TARGET)
    if sent is None:
        query: bytes = scope["query_string"]
        return query
    return bytes(sent["target"]).partition(b"?")[2]


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

    async def handle(self, request: Request) -> Response:
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
        arrival = self._arrival(request.method, str(address) if address else "", request.headers)
        query = raw_query(request.scope)
        body: bytes | None = None
        fields: dr.Fields | None = None
        try:
            body = await read_body(
                request, settings.receiver_max_body_bytes, settings.receiver_read_timeout_seconds
            )
            if request.method not in ("GET", "POST"):
                raise Refused(405, f"method {request.method} is not GET or POST", body)
            fields = self._scrub_fields(await self._fields(request.headers, query, body))
            dr.validate(fields)
        except Invalid as exc:
            return await self._refuse(Refused(400, str(exc), body), arrival, fields, query)
        except Refused as refused_body:
            return await self._refuse(refused_body, arrival, fields, query)
        return await self._store(identity.dr_key(fields), dr.raw_record(fields, arrival))

    async def _fields(self, headers: Headers, query: bytes, body: bytes) -> dr.Fields:
        limit = self.settings.receiver_max_fields
        charset = dr.charset_of(headers.get("content-type", ""))
        query_pairs = dr.split_form(query, limit)
        from_body, count = await body_fields(headers, body, limit, charset)
        if len(query_pairs) + count > limit:
            total = len(query_pairs) + count
            raise Invalid(f"too many fields ({total}, at most {limit}) in query and body")
        return dr.merge(dr.decode_form(query_pairs, charset), from_body)

    def _arrival(self, method: str, remote_addr: str, headers: Headers) -> dr.Arrival:
        return dr.Arrival(
            receipt_id=uuid.uuid4().hex,
            received_at=self.clock(),
            remote_addr=remote_addr,
            receiver=self.settings.receiver_id,
            method=method,
            content_type=headers.get("content-type", ""),
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
        arrival = self._arrival(head.method(raw), str(address) if address else "", Headers())
        reason = self._scrub(str(refused["reason"]).encode()).decode()
        record = deadletters.refused_push(
            reason, arrival, None, request=self._scrub(raw), limit=len(raw)
        )
        log.info("request unreadable", extra={"status": status, "receipt_id": arrival.receipt_id})
        log.debug("request unreadable", extra={"reason": reason})
        return await self._publish(
            self.names.dead_letter, None, record, f"unreadable_{status}", answer(False, status)
        )

    def _scrub_fields(self, fields: dr.Fields) -> dr.Fields:
        """The fields with the token, as decoded, replaced wherever a value holds it."""
        token = self.settings.receiver_token
        if token is None:
            return fields
        secret = token.reveal()
        redacted = REDACTED.decode()
        return {name: value.replace(secret, redacted) for name, value in fields.items()}

    def _scrub(self, data: bytes) -> bytes:
        token = self.settings.receiver_token
        return scrub(data, token.reveal() if token else None)

    async def _store(self, key: bytes, record: bytes) -> Response:
        return await self._publish(self.names.dr_raw, key, record, "success", answer(True, 200))

    async def _refuse(
        self,
        refused: Refused,
        arrival: dr.Arrival,
        fields: dr.Fields | None,
        query: bytes,
    ) -> Response:
        body = None if refused.body is None else self._scrub(refused.body)
        reason = self._scrub(refused.reason.encode()).decode()
        record = deadletters.refused_push(
            reason,
            arrival,
            fields,
            body,
            query=self._scrub(query),
            limit=self.settings.receiver_max_body_bytes,
        )
        log.info("push refused", extra={"status": refused.status, "receipt_id": arrival.receipt_id})
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
        credentials=lambda: clients.fingerprint(settings),
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

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> Response:
        publisher = endpoint.publisher
        state = await publisher.readiness() if publisher else Readiness(False, "starting")
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
