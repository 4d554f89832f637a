"""`nxcloud-connector up`: the whole pipeline on one machine, for trying it out."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import ExitStack

from connector import admin, broker
from connector.settings import Settings
from connector.topics import declare


def up(settings: Settings) -> int:
    """Start a local Kafka unless KAFKA_BOOTSTRAP_SERVERS names one, create topics, and wait."""
    with ExitStack() as stack:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            local = broker.LocalKafka(broker.BrokerConfig(broker.default_data_dir()))
            print(f"Starting Apache Kafka {broker.KAFKA_VERSION} ...", flush=True)
            stack.enter_context(local)
        applied = asyncio.run(_topics(settings))
        print(f"Kafka:  {settings.kafka_bootstrap_servers}", flush=True)
        print(f"Topics: {', '.join(spec.name for spec in declare(settings))}", flush=True)
        for drift in applied.plan.drift:
            print(f"drift   {drift}", flush=True)
        print("Running. Stop with Ctrl-C.", flush=True)
        stopping = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        signal.sigwait(stopping)
        print("Stopping ...", flush=True)
    return 0


async def _topics(settings: Settings) -> admin.Applied:
    async with admin.admin_client(settings.kafka_bootstrap_servers) as client:
        return await admin.ensure(client, declare(settings))
