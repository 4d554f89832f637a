"""The receiver's HTTP/1.1 edge: uvicorn's httptools protocol with a lenient request line
and bounded request heads.

Each head is read here before the parser sees it: at most `Limits.head_bytes` bytes and
`Limits.headers` header lines, within `Limits.head_seconds` of its first byte, its request
line repaired (`connector.head`). A head refused here or by the parser is handed to the
application as a request to `refusal_path` carrying the `REFUSED` extension (the status,
the reason and the raw bytes received), so the application answers and dead-letters it;
then the connection is closed. A request read carries its target exactly as received in
the `TARGET` extension. A response given before its request was read to the end, or to a
chunked request (the parser frames it, and would read what follows unrepaired), also
closes the connection. Closing means: the answer is flushed, the write side shut,
and at most `Limits.linger_bytes` more bytes are read and dropped for `Limits.linger_seconds`
(an answer not yet written pauses the reading instead, so that it goes out).

At most `Limits.connections` connections are open at once: one more is closed as soon as it
is accepted, before any TLS, and counted. With a `Certificate`, each connection speaks TLS
(started here, so the cap comes first), its handshake cut after `Limits.head_seconds`.
Every request is marked with the listener it came in on (`LISTENER`: `PUSH` here,
`MANAGEMENT` on `ManagementProtocol`).
"""

from __future__ import annotations

import asyncio
import http
import ssl
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httptools
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, HTTPScope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from connector import head
from connector.receiver import heap
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.tls import Certificate

REFUSED: Final = "connector.refused"
BODY_ERROR: Final = "connector.body_error"
TARGET: Final = "connector.target"
LISTENER: Final = "connector.listener"
PUSH: Final = "push"
MANAGEMENT: Final = "management"
METRICS: Final = "connector.receiver_metrics"


@dataclass(frozen=True)
class Limits:
    head_bytes: int = 16384
    headers: int = 64
    head_seconds: float = 5.0
    raw_bytes: int = 65536
    linger_bytes: int = 1 << 20
    linger_seconds: float = 2.0
    answer_seconds: float = 30.0


HANDSHAKES: Final = 256
EBB_FROM: Final = 256


@dataclass
class Gate:
    """The connections open on one listener, at most `limit`; of them at most `handshakes`
    in a TLS handshake (each holds the TLS layer's buffers, up to 256 KiB)."""

    limit: int
    handshakes: int = HANDSHAKES
    open: int = 0
    shaking: int = 0
    peak: int = 0

    def admit(self, tls: bool = False) -> bool:
        if self.open >= self.limit or (tls and self.shaking >= self.handshakes):
            return False
        self.open += 1
        self.shaking += tls
        self.peak = max(self.peak, self.open)
        return True

    def leave(self) -> bool:
        """One connection fewer; True when a flood has ebbed: from at least EBB_FROM open,
        down to a quarter of the most since the last ebb (time to give memory back)."""
        self.open -= 1
        if self.peak < EBB_FROM or self.open > self.peak // 4:
            return False
        self.peak = self.open
        return True


class ManagementProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its requests marked as the management listener's."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.access_log = False  # a request line can hold a DR: never logged

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope.setdefault("extensions", {})[LISTENER] = {"name": MANAGEMENT}


class EdgeProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()
    refusal_path: ClassVar[str] = "/"
    gate: ClassVar[Gate] = Gate(2000)
    certificate: ClassVar[Certificate | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.access_log = False  # a request line can hold a DR: never logged
        self._message_done = False
        self._close_after = False
        self._head = bytearray()
        self._raw = b""
        self._reading_head = True
        self._body_left: int | None = 0
        self._pending = bytearray()
        self._head_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._answered = False
        self._dropped = 0
        self._admitted = False
        self._connected = False
        self._early = bytearray()  # what TLS handed over before start_tls returned

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        metrics: ReceiverMetrics | None = self.app_state.get(METRICS)
        if not self.gate.admit(tls=self.certificate is not None):
            transport.abort()
            if metrics is not None:
                metrics.connections_refused.inc()
            return
        self._admitted = True
        if metrics is not None:
            metrics.connections.set(self.gate.open)
        if self.certificate is None:
            self._connect(transport)
            return
        task = self.loop.create_task(self._start_tls(transport, self.certificate.current()))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            secured = await self.loop.start_tls(
                transport, self, context, server_side=True,
                ssl_handshake_timeout=self.limits.head_seconds,
            )  # fmt: skip
        except (OSError, TimeoutError, ConnectionError, ssl.SSLError):
            transport.abort()  # no handshake in time, or not TLS: nothing to answer
            return
        finally:
            self.gate.shaking -= 1
        if secured is None or secured.is_closing():
            return
        self._connect(secured)
        early, self._early = bytes(self._early), bytearray()
        if early:
            self.data_received(early)

    def _connect(self, transport: asyncio.Transport) -> None:
        self._connected = True
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        if self._admitted:
            self._admitted = False
            if self.gate.leave():
                self.loop.call_soon(heap.give_back)
            metrics: ReceiverMetrics | None = self.app_state.get(METRICS)
            if metrics is not None:
                metrics.connections.set(self.gate.open)
        if self._connected:
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope.setdefault("extensions", {})[LISTENER] = {"name": PUSH}

    def data_received(self, data: bytes) -> None:
        if not self._connected:
            self._early += data
            return
        self._unset_keepalive_if_required()
        if self._closing:
            self._dropped += len(data)
            if self._dropped <= self.limits.linger_bytes:
                return
            if self._answered:
                self.transport.close()
            else:
                self.flow.pause_reading()  # the answer goes out first
        elif self._reading_head:
            self._read_head(data)
        else:
            self._feed(data)

    def _read_head(self, data: bytes) -> None:
        if self._head_timer is None:
            self._arm_head_timer()
        searched = len(self._head)
        self._head += data
        end = head.end_of_head(self._head, searched)
        size = len(self._head) if end is None else end
        lines = head.line_count(self._head[:size]) - (0 if end is None else 1)
        if size > self.limits.head_bytes:
            self._refuse(431, f"request head exceeds {self.limits.head_bytes} bytes")
        elif lines > self.limits.headers + 1:
            self._refuse(431, f"more than {self.limits.headers} header lines")
        elif end is not None:
            self._disarm_head_timer()
            received = bytes(self._head[:end])
            rest = bytes(self._head[end:])
            self._raw = bytes(self._head[: self.limits.raw_bytes])
            self._head = bytearray()
            self._reading_head = False
            self._body_left = head.body_length(received)
            self.cycle = None  # type: ignore[assignment]
            self._message_done = False
            if not self._parse(head.repair(received)):
                return
            if self.cycle is None:
                self._head = bytearray(self._raw)
                self._refuse(400, "unreadable HTTP request: the parser took no request head")
                return
            # On the cycle's own scope, before the body is fed: what follows an Upgrade
            # header reaches the parser as a new message, which gives the protocol a new scope.
            target: dict[object, object] = {"target": head.target(received)}
            self.cycle.scope.setdefault("extensions", {})[TARGET] = target
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        if self._body_left is not None:
            data, after = data[: self._body_left], data[self._body_left :]
            self._body_left -= len(data)
            self._pending += after
            if len(self._pending) > self.limits.head_bytes:
                self.flow.pause_reading()
        if data:
            self._parse(data)

    def _parse(self, data: bytes) -> bool:
        """Feed the parser; False once it has refused what it got."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._parser_refused(f"unreadable HTTP request: {exc}")
            return False
        except httptools.HttpParserUpgrade:
            self._close_after = True  # the parser reads nothing after an upgrade request
        return True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_done = True

    def on_response_complete(self) -> None:
        chunked = self._body_left is None
        if not self._message_done or chunked or self._close_after:
            self.server_state.total_requests += 1
            self._close()
            return
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self._reading_head = True
        self._body_left = 0
        pending, self._pending = bytes(self._pending), bytearray()
        if pending:
            self._unset_keepalive_if_required()
            self._read_head(pending)

    def _should_upgrade(self) -> bool:
        return False  # no WebSocket here: an Upgrade header is just a header

    def _parser_refused(self, reason: str) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.scope.setdefault("extensions", {})[BODY_ERROR] = {"reason": reason}
            cycle.more_body = False
            cycle.message_event.set()
            self.flow.resume_reading()
            return
        self._head = bytearray(self._raw)
        self._refuse(400, reason)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self._closing:
            return
        if not self._head:
            self.transport.close()
            return
        limit = self.limits.head_seconds
        self._refuse(408, f"request head not received within {limit:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        raw = bytes(self._head[: self.limits.raw_bytes])
        received = len(self._head)
        self._head = bytearray()
        self._close(answer_first=True)
        refused = {"status": status, "reason": reason, "raw": raw, "received": received}
        task = self.loop.create_task(self._answer(refused))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _close(self, *, answer_first: bool = False) -> None:
        """Read no further: drop what comes (bounded), then close once answered."""
        self._closing = True
        self._disarm_head_timer()
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        delay = self.limits.linger_seconds + (self.limits.answer_seconds if answer_first else 0)
        self._close_timer = self.loop.call_later(delay, self.transport.close)
        if not answer_first:
            self._shut_write_side()

    def _shut_write_side(self) -> None:
        self._answered = True
        self._dropped = 0
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = self.loop.call_later(self.limits.linger_seconds, self.transport.close)

    async def _answer(self, refused: dict[str, object]) -> None:
        scope: HTTPScope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme or "http",
            "method": "POST",
            "root_path": "",
            "path": self.refusal_path,
            "raw_path": self.refusal_path.encode(),
            "query_string": b"",
            "headers": [],
            "state": self.app_state.copy(),
            "extensions": {REFUSED: refused, LISTENER: {"name": PUSH}},  # type: ignore[dict-item]
        }
        reply: list[bytes] = []
        status = int(str(refused["status"]))
        sent = False

        async def receive() -> ASGIReceiveEvent:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: ASGISendEvent) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                reply.extend(
                    b"%s: %s\r\n" % (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                )
            elif message["type"] == "http.response.body":
                reply.append(b"\r\n")
                reply.append(bytes(message.get("body", b"")))

        try:
            async with asyncio.timeout(self.limits.answer_seconds):
                await self.app(scope, receive, send)
        except Exception:  # the application failed: say so all the same
            self.logger.exception("refused request not answered by the application")
            reply = [b"content-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n\r\nerror"]
            status = 503
        if not self.transport.is_closing():
            phrase = http.HTTPStatus(status).phrase.encode()
            start = b"HTTP/1.1 %d %s\r\nconnection: close\r\n" % (status, phrase)
            self.transport.write(start + b"".join(reply))
            self._shut_write_side()
