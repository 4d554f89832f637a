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

At most `gate.limit` connections are open at once: one more is closed as soon as it is
accepted, before any TLS, and counted. With a `Certificate`, each accepted connection's
protocol is the event loop's own TLS protocol (`Handshake`, uvloop's or asyncio's
`SSLProtocol`, as `create_server(ssl=...)` would make it), so every byte a client sends goes
to TLS from the first; it counts the connection in when accepted and out when the socket is
gone, however it ends, and cuts a handshake after `Limits.head_seconds`. The HTTP protocol
runs inside it once the handshake is done. Every request is marked with the listener it came
in on (`LISTENER`: `PUSH`, or `MANAGEMENT` on `ManagementProtocol`, which answers what it
refuses itself: nothing on the management port is dead-lettered).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import functools
import http
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

import httptools
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, HTTPScope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from connector import head
from connector.receiver import heap
from connector.receiver.gate import Gate
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.tls import Certificate

REFUSED: Final = "connector.refused"
BODY_ERROR: Final = "connector.body_error"
TARGET: Final = "connector.target"
LISTENER: Final = "connector.listener"
PUSH: Final = "push"
MANAGEMENT: Final = "management"
METRICS: Final = "connector.receiver_metrics"
PUSH_GATE: Final = "connector.push_gate"  # (gate, the loop's clock, TLS or not)


@dataclass(frozen=True)
class Limits:
    head_bytes: int = 16384
    headers: int = 64
    head_seconds: float = 5.0
    raw_bytes: int = 65536
    linger_bytes: int = 1 << 20
    linger_seconds: float = 2.0
    answer_seconds: float = 30.0


class EdgeProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()
    refusal_path: ClassVar[str] = "/"
    gate: ClassVar[Gate] = Gate(2000)
    certificate: ClassVar[Certificate | None] = None
    listener: ClassVar[str] = PUSH

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
        self._gated = True  # False inside a Handshake, which counts the connection itself
        self._admitted = False

    @classmethod
    def factory(
        cls, config: Config, server_state: ServerState, app_state: dict[str, Any]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """What the listener makes for each accepted connection: this protocol, or with a
        certificate the loop's TLS protocol carrying it."""
        loop = asyncio.get_running_loop()
        certificate = cls.certificate
        if certificate is None:
            return lambda: cls(config, server_state, app_state, loop)
        handshake = handshake_class(is_uvloop(loop))

        def secured() -> asyncio.BaseProtocol:
            inner = cls(config, server_state, app_state, loop)
            inner._gated = False
            made = handshake(loop, inner, certificate.current(), cls, app_state)
            return cast(asyncio.BaseProtocol, made)

        return secured

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._gated:
            if not enter(self.gate, self.listener, self.app_state, self.loop.time()):
                transport.abort()
                return
            self._admitted = True
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        if not self._gated:
            super().connection_lost(exc)
        elif self._admitted:
            self._admitted = False
            leave(self.gate, self.listener, self.app_state, self.loop)
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope.setdefault("extensions", {})[LISTENER] = {"name": self.listener}

    def data_received(self, data: bytes) -> None:
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


class ManagementProtocol(EdgeProtocol):
    """The management listener: the same bounded heads and timeouts, a small cap of its own;
    what it refuses it answers `error` itself, stores nothing and counts nowhere."""

    gate: ClassVar[Gate] = Gate(64)
    listener: ClassVar[str] = MANAGEMENT

    async def _answer(self, refused: dict[str, object]) -> None:
        if self.transport.is_closing():
            return
        status = int(str(refused["status"]))
        phrase = http.HTTPStatus(status).phrase.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: 5\r\n\r\nerror" % (status, phrase)
        )
        self._shut_write_side()


def _metrics(app_state: dict[str, Any]) -> ReceiverMetrics | None:
    metrics: ReceiverMetrics | None = app_state.get(METRICS)
    return metrics


def enter(
    gate: Gate, listener: str, app_state: dict[str, Any], now: float, tls: bool = False
) -> bool:
    """Admit one connection through `gate`, or count its refusal: False then."""
    admitted = gate.admit(tls, now)
    metrics = _metrics(app_state)
    if metrics is not None:
        if listener == PUSH:
            opened, refused = metrics.connections, metrics.connections_refused
        else:
            opened, refused = metrics.management_connections, metrics.management_refused
        if admitted:
            opened.set(gate.open)
        else:
            refused.inc()
    return admitted


def leave(
    gate: Gate, listener: str, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> None:
    if gate.leave():
        loop.call_soon(heap.give_back)
    metrics = _metrics(app_state)
    if metrics is not None:
        opened = metrics.connections if listener == PUSH else metrics.management_connections
        opened.set(gate.open)


class _Handshake:
    """The event loop's own TLS protocol around one connection's `EdgeProtocol`, as
    `loop.create_server(ssl=...)` makes it, and the connection's place in the gate.

    create_server(ssl=...) would tell the application nothing of a connection whose handshake
    fails or is reset (the TLS protocol calls the application's connection_made only after
    the handshake, and its connection_lost only then), and could not refuse one before its
    handshake: so the listener makes this protocol itself. It is the socket's protocol from
    its accept to its end, so it sees every byte and every end exactly once. (Its own
    attributes are `_door_*`: asyncio's SSLProtocol has an `_app_state` of its own.)"""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inner: EdgeProtocol,
        context: ssl.SSLContext,
        edge: type[EdgeProtocol],
        app_state: dict[str, Any],
    ) -> None:
        waiter = loop.create_future()
        waiter.add_done_callback(self._handshake_over)
        super().__init__(  # type: ignore[call-arg]
            loop, inner, context, waiter, True, None,
            ssl_handshake_timeout=edge.limits.head_seconds,
            ssl_shutdown_timeout=edge.limits.linger_seconds,
        )  # fmt: skip
        self._door_loop = loop
        self._door_edge = edge
        self._door_state = app_state
        self._door_admitted = False
        self._door_shaking = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._door_edge
        if not enter(edge.gate, edge.listener, self._door_state, self._door_loop.time(), tls=True):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._door_admitted = self._door_shaking = True
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._door_admitted:
            return
        self._door_admitted = False
        self._shaken()
        leave(self._door_edge.gate, self._door_edge.listener, self._door_state, self._door_loop)
        super().connection_lost(exc)  # type: ignore[misc]

    def _handshake_over(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.cancelled():
            waiter.exception()  # a failed handshake is no error of ours: nothing to log
        self._shaken()

    def _shaken(self) -> None:
        if self._door_shaking:
            self._door_shaking = False
            self._door_edge.gate.shaken()


@functools.cache
def handshake_class(on_uvloop: bool) -> type[_Handshake]:
    """`_Handshake` on the TLS protocol of the loop's kind: uvloop's own, else asyncio's."""
    base: type = asyncio.sslproto.SSLProtocol
    if on_uvloop:
        from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]

        base = SSLProtocol
    return type("Handshake", (_Handshake, base), {})


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    return isinstance(loop, uvloop.Loop)
