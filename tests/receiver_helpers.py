"""The receiver served as `nxcloud-connector receiver` serves it: both listeners, its own
protocol on the push port, TLS when the settings say so; on free loopback ports."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette

from connector.local.broker import free_port
from connector.receiver.app import edge
from connector.receiver.server import server
from connector.settings import Settings


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
