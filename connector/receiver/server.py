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
from connector.receiver.app import create_app, edge, management_edge
from connector.receiver.protocol import PUSH_GATE, EdgeProtocol, ManagementProtocol
from connector.settings import Settings

log = logging.getLogger(__name__)
STARTUP_FAILURE = 3
PRODUCTION = "production"  # NXCLOUD_DEPLOYMENT, as deploy/overlays/production sets it


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

    def __init__(
        self,
        config: Config,
        push: socket.socket,
        management: socket.socket,
        management_protocol: type[ManagementProtocol] = ManagementProtocol,
    ) -> None:
        super().__init__(config)
        self.push_socket = push
        self.management_socket = management
        self.management_protocol = management_protocol

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        loop = asyncio.get_running_loop()
        push: type[EdgeProtocol] = self.config.http_protocol_class  # type: ignore[assignment]
        state = self.lifespan.state
        state[PUSH_GATE] = (push.gate, loop.time, push.certificate is not None)
        self.servers = []
        for sock, protocol in (
            (self.push_socket, push),
            (self.management_socket, self.management_protocol),
        ):
            create = protocol.factory(self.config, self.server_state, state)
            self.servers.append(await loop.create_server(create, sock=sock, backlog=2048))
        log.info("receiver listening", extra={"push": address(self.push_socket),
                 "management": address(self.management_socket)})  # fmt: skip
        self.started = True


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server(settings: Settings, app: Starlette, protocol: type[EdgeProtocol]) -> ReceiverServer:
    """The receiver's server, its sockets bound (OSError when a port is taken)."""
    problem = open_to_anyone(settings)
    if problem is not None:
        raise ConfigError(problem)
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
    return ReceiverServer(config, push, management, management_edge(settings))


def open_to_anyone(settings: Settings) -> str | None:
    """Why a production receiver must not start: its push port would store what anyone sends
    (dead letters included), with neither a token nor an allow-list, unless allowed."""
    if settings.deployment != PRODUCTION or settings.receiver_allow_anyone:
        return None
    if settings.receiver_token is not None or settings.receiver_allow_networks:
        return None
    return (
        f"NXCLOUD_RECEIVER_TOKEN or NXCLOUD_RECEIVER_ALLOW_NETWORKS: neither is set, and"
        f" NXCLOUD_DEPLOYMENT={PRODUCTION} (anyone could store pushes and dead letters); set"
        " one, or NXCLOUD_RECEIVER_ALLOW_ANYONE=true to run so knowingly"
    )


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
