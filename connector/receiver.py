"""The DR receiver: a thin Starlette app that stores every push before it answers.

`success` means the push is in Kafka, acknowledged by all in-sync replicas, or fsync'd
in the local spool on its way there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connector import dr
from connector.clock import utcnow
from connector.errors import SpoolError
from connector.guard import client_address, network_ok, token_ok
from connector.metrics import ReceiverMetrics
from connector.publisher import Publisher, Readiness, Store
from connector.settings import Settings
from connector.spool import Spool
from connector.topics import TopicNames

log = logging.getLogger(__name__)

DR_PATH = "/nxcloud/voice/dr"
StoreFactory = Callable[[Settings, ReceiverMetrics], AbstractAsyncContextManager[Store]]


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def answer(ok: bool, status: int) -> Response:
    return PlainTextResponse("success" if ok else "error", status_code=status)


async def read_body(request: Request, limit: int, patience: float) -> bytes:
    """The body, refusing it as soon as it exceeds `limit` or arrives too slowly."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(patience):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, f"body not received within {patience:g} s") from None
    return b"".join(chunks)


async def body_fields(headers: Headers, body: bytes, max_fields: int) -> dr.Fields:
    if not body:
        return {}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _multipart(headers, body, max_fields)
    try:
        return dr.parse_urlencoded(body, max_fields)
    except UnicodeDecodeError:
        raise dr.Invalid("body is not UTF-8 form data") from None


async def _multipart(headers: Headers, body: bytes, max_fields: int) -> dr.Fields:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, stream(), max_files=0, max_fields=max_fields)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise dr.Invalid(f"unreadable multipart body: {exc.message}") from None
    fields: dr.Fields = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise dr.Invalid(f"unexpected file in field {name!r}")
        fields[name] = value
    return fields


@dataclass
class DrEndpoint:
    settings: Settings
    names: TopicNames
    metrics: ReceiverMetrics
    clock: Callable[[], datetime]
    publisher: Store | None = None

    async def handle(self, request: Request) -> Response:
        settings = self.settings
        peer = request.client.host if request.client else None
        address = client_address(
            peer, request.headers.get("x-forwarded-for"), settings.receiver_trusted_proxies
        )
        expected = settings.receiver_token.reveal() if settings.receiver_token else None
        presented = request.path_params.get("token") or request.query_params.get("token")
        if not token_ok(expected, presented) or not network_ok(
            address, settings.receiver_allow_networks
        ):
            self.metrics.requests.labels("forbidden").inc()
            return answer(False, 403)
        arrival = dr.Arrival(
            receipt_id=uuid.uuid4().hex,
            received_at=self.clock(),
            remote_addr=str(address) if address else "",
            receiver=settings.receiver_id,
            method=request.method,
            content_type=request.headers.get("content-type", ""),
        )
        query: dr.Fields | None = None
        body: bytes | None = None
        try:
            query = dr.parse_urlencoded(request.scope["query_string"], settings.receiver_max_fields)
            body = await read_body(
                request, settings.receiver_max_body_bytes, settings.receiver_read_timeout_seconds
            )
            fields = dr.merge(
                query, await body_fields(request.headers, body, settings.receiver_max_fields)
            )
            dr.validate(fields)
        except (dr.Invalid, UnicodeDecodeError) as exc:
            reason = str(exc) if isinstance(exc, dr.Invalid) else "query is not UTF-8"
            return await self._refuse(Refused(400, reason), arrival, query, body)
        except Refused as refused:
            return await self._refuse(refused, arrival, query, None)
        return await self._store(dr.key(fields), dr.raw_record(fields, arrival))

    async def _store(self, key: bytes, record: bytes) -> Response:
        return await self._publish(self.names.dr_raw, key, record, "success", answer(True, 200))

    async def _refuse(
        self,
        refused: Refused,
        arrival: dr.Arrival,
        query: dr.Fields | None,
        body: bytes | None,
    ) -> Response:
        fields = None if query is None else dr.merge(query, {})
        record = dr.dead_letter(refused.reason, arrival, fields, body)
        log.info("push refused", extra={"reason": refused.reason, "status": refused.status})
        return await self._publish(
            self.names.dead_letter,
            None,
            record,
            f"refused_{refused.status}",
            answer(False, refused.status),
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
    return Publisher(
        settings.kafka_bootstrap_servers,
        spool,
        timeout,
        metrics,
        dead_letter_topic=TopicNames.of(settings).dead_letter,
        receiver_id=settings.receiver_id,
    )


def create_app(
    settings: Settings,
    names: TopicNames | None = None,
    clock: Callable[[], datetime] = utcnow,
    store: StoreFactory = kafka_store,
) -> Starlette:
    metrics = ReceiverMetrics()
    endpoint = DrEndpoint(settings, names or TopicNames.of(settings), metrics, clock)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with store(settings, metrics) as opened:
            endpoint.publisher = opened
            yield
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

    return Starlette(
        routes=[
            Route(DR_PATH, endpoint.handle, methods=["GET", "POST"]),
            Route(DR_PATH + "/{token}", endpoint.handle, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
