"""The receiver served as `nxcloud-connector receiver` serves it: both listeners, its own
protocol on the push port, TLS when the settings say so; on free loopback ports. A raw-socket
client for it (`Server`, `read_reply`), shared by the edge, fuzz and TLS tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from connector import admin
from connector.local.broker import free_port
from connector.receiver.app import create_app, edge
from connector.receiver.server import server
from connector.settings import Settings
from connector.topics import TopicNames, declare
from tests.kafka_helpers import read_topic
from tests.support import EXAMPLE_FIELDS, PROVIDER_EXAMPLE


@dataclass(frozen=True)
class Ports:
    push: int
    management: int


def on_free_ports(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        receiver_host="127.0.0.1",
        receiver_port=free_port(),
        receiver_management_host="127.0.0.1",
        receiver_management_port=free_port(),
    )


@asynccontextmanager
async def serving_receiver(settings: Settings, app: Starlette) -> AsyncIterator[Ports]:
    """Serve `app` with both listeners on the settings' ports; yields them once started."""
    receiver = server(settings, app, edge(settings))
    task = asyncio.create_task(receiver.serve())
    try:
        async with asyncio.timeout(30):
            while not receiver.started:
                if task.done():
                    task.result()
                    raise AssertionError("the receiver stopped during start-up")
                await asyncio.sleep(0.02)
        yield Ports(settings.receiver_port, settings.receiver_management_port)
    finally:
        receiver.should_exit = True
        await task


DR = b"/nxcloud/voice/dr"
HOST = b"Host: 106.15.34.94:8080\r\n"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    settings: Settings
    names: TopicNames
    management: int = 0

    async def open(
        self, port: int | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, port or self.port)

    async def send(self, raw: bytes, deadline: float = 15, port: int | None = None) -> Reply:
        """Write `raw` exactly (to the push port, or `port`), read one response, close."""
        reader, writer = await self.open(port)
        try:
            writer.write(raw)
            await writer.drain()
            async with asyncio.timeout(deadline):
                return await read_reply(reader, bodiless=raw.startswith(b"HEAD "))
        finally:
            writer.close()

    async def letters(self, count: int) -> list[dict[str, Any]]:
        return await read_topic(
            self.settings.kafka_bootstrap_servers, self.names.dead_letter, lambda v: len(v) >= count
        )

    async def stored(self, messageid: str) -> dict[str, Any]:
        def found(values: list[Any]) -> bool:
            return any(v["fields"].get("messageid") == messageid for v in values)

        values = await read_topic(self.settings.kafka_bootstrap_servers, self.names.dr_raw, found)
        return next(v for v in values if v["fields"]["messageid"] == messageid)


async def read_reply(reader: asyncio.StreamReader, bodiless: bool = False) -> Reply:
    """The final response (a 100 Continue before it is skipped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b"" if bodiless else await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def closed(reader: asyncio.StreamReader, deadline: float) -> bool:
    """True once the server has closed the connection (EOF or reset) within `deadline`."""
    try:
        async with asyncio.timeout(deadline):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def example(messageid: str) -> bytes:
    """The provider's example push exactly as printed, raw spaces included."""
    return PROVIDER_EXAMPLE.replace(EXAMPLE_FIELDS["messageid"], messageid).encode()


def edge_settings_of(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        settings,
        spool_dir=tmp_path / "spool",
        receiver_id="edge-t",
        receiver_head_timeout_seconds=2,
        receiver_read_timeout_seconds=2,
    )


async def start(settings: Settings, names: TopicNames) -> AsyncIterator[Server]:
    async with admin.admin_client(settings) as client:
        await admin.ensure(client, declare(settings, names))
    settings = dataclasses.replace(on_free_ports(settings), receiver_idle_timeout_seconds=1)
    async with serving_receiver(settings, create_app(settings, names)) as ports:
        yield Server("127.0.0.1", ports.push, settings, names, ports.management)
