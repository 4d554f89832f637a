"""Long-running components with their signal handling and metrics endpoints."""

from __future__ import annotations

import asyncio
import signal

import httpx
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from connector import clients
from connector.errors import KafkaAccessError
from connector.poller import Poller
from connector.settings import Settings
from connector.topics import TopicNames


async def poll(settings: Settings, names: TopicNames | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await clients.check(settings)  # a refused login is one line, not a retry loop
    timeout = httpx.Timeout(settings.poller_http_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout) as http:
        poller = Poller(settings, names or TopicNames.of(settings), http)
        if settings.poller_metrics_port:
            start_http_server(settings.poller_metrics_port, registry=poller.metrics.registry)
        try:
            await poller.run(stop)
        except KafkaError as exc:
            refusal = clients.explain(exc, settings)
            if refusal is None:
                raise
            raise KafkaAccessError(refusal) from None
    return 0
