"""The receiver as the benchmark serves it: real, or with publishing replaced by a no-op."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette

from connector.receiver.app import create_app, edge, kafka_store
from connector.receiver.metrics import ReceiverMetrics
from connector.receiver.protocol import EdgeProtocol
from connector.receiver.publisher import Readiness, Store, StoredIn
from connector.receiver.server import server
from connector.settings import Settings


class NoopStore:
    async def publish(self, topic: str, key: bytes | None, value: bytes) -> StoredIn:
        return StoredIn.KAFKA

    async def readiness(self) -> Readiness:
        return Readiness(True, "ready")


def noop_store(
    _settings: Settings, _metrics: ReceiverMetrics
) -> AbstractAsyncContextManager[Store]:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        yield NoopStore()

    return opened()


def app() -> Starlette:
    noop = os.environ.get("BENCH_NOOP") == "1"
    return create_app(Settings.from_env(), store=noop_store if noop else kafka_store)


def protocol() -> type[EdgeProtocol]:
    """The receiver's HTTP protocol, as production serves it."""
    return edge(Settings.from_env())


Protocol = protocol()


def main() -> None:
    """Serve as `nxcloud-connector receiver` does (both listeners, TLS when its files are set,
    uvloop), the store real or a no-op."""
    settings = Settings.from_env()
    noop = os.environ.get("BENCH_NOOP") == "1"
    app = create_app(settings, store=noop_store if noop else kafka_store)
    server(settings, app, edge(settings)).run()


if __name__ == "__main__":
    main()
