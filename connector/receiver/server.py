"""The receiver's two listeners in one uvicorn server: the push port (the receiver's own
protocol, TLS when configured) and the management port (`/metrics`, `/healthz`, `/readyz`).

Both share one app, its lifespan and its graceful shutdown; the app tells the listeners
apart by the mark each protocol puts on its requests (`connector.receiver.protocol`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import Config

from connector.errors import ConfigError
from connector.receiver.app import create_app, edge
from connector.receiver.protocol import EdgeProtocol, ManagementProtocol
from connector.settings import Settings

log = logging.getLogger(__name__)
STARTUP_FAILURE = 3


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ReceiverServer(uvicorn.Server):
    """uvicorn's server, listening on the push socket and the management socket."""

    def __init__(self, config: Config, push: socket.socket, management: socket.socket) -> None:
        super().__init__(config)
        self.push_socket = push
        self.management_socket = management

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        loop = asyncio.get_running_loop()
        self.servers = []
        for sock, protocol in (
            (self.push_socket, self.config.http_protocol_class),
            (self.management_socket, ManagementProtocol),
        ):

            def create(
                _loop: asyncio.AbstractEventLoop | None = None,
                protocol: type[asyncio.Protocol] = protocol,
            ) -> asyncio.Protocol:
                return protocol(  # type: ignore[call-arg]
                    config=self.config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                    _loop=_loop,
                )

            self.servers.append(await loop.create_server(create, sock=sock, backlog=2048))
        log.info("receiver listening", extra={"push": address(self.push_socket),
                 "management": address(self.management_socket)})  # fmt: skip
        self.started = True


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server(settings: Settings, app: Starlette, protocol: type[EdgeProtocol]) -> ReceiverServer:
    """The receiver's server, its sockets bound (OSError when a port is taken)."""
    config = uvicorn.Config(
        app,
        http=protocol,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=settings.receiver_idle_timeout_seconds,
        timeout_graceful_shutdown=20,
    )
    push = listen("NXCLOUD_RECEIVER_PORT", settings.receiver_host, settings.receiver_port)
    try:
        host, port = settings.receiver_management_host, settings.receiver_management_port
        management = listen("NXCLOUD_RECEIVER_MANAGEMENT_PORT", host, port)
    except ConfigError:
        push.close()
        raise
    return ReceiverServer(config, push, management)


def listen(variable: str, host: str, port: int) -> socket.socket:
    try:
        return bind(host, port)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot listen on {host}:{port} ({exc.strerror})") from None


def run(settings: Settings) -> int:
    """The `receiver` command: serve until SIGINT or SIGTERM."""
    receiver = server(settings, create_app(settings), edge(settings))
    receiver.run()
    return 0
