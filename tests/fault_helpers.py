"""Concurrent push load on a receiver, and what must hold after a fault."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from connector.topics import TopicNames
from tests.kafka_helpers import read_topic
from tests.support import EXAMPLE_FIELDS, gauge

LANES = 4
# A push whose direct send timed out is spooled while the producer still delivers its
# original: at most one repeat per push in flight when Kafka fails (LANES), twice over
# for a failure noticed again while it recovers.
REPEAT_BOUND = 2 * LANES


class Load:
    """LANES concurrent pushers; every answer kept by messageid."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: dict[str, str] = {}
        self.stopping = False
        self._sent = 0
        self._lanes: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()

    def start(self) -> None:
        self._lanes = [asyncio.create_task(self._run(lane)) for lane in range(LANES)]

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self._lanes)

    @property
    def succeeded(self) -> set[str]:
        return {m for m, answer in self.answers.items() if answer == "200 success"}

    async def _run(self, lane: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as http:
            while not self.stopping:
                messageid = f"fault-{lane}-{self._sent}"
                self._sent += 1
                try:
                    response = await http.post(
                        "/nxcloud/voice/dr", data={**EXAMPLE_FIELDS, "messageid": messageid}
                    )
                    self.answers[messageid] = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    self.answers[messageid] = type(exc).__name__
                    await asyncio.sleep(0.05)
                self._progress.set()

    async def more(self, count: int, deadline: float = 120) -> None:
        target = len(self.answers) + count
        async with asyncio.timeout(deadline):
            while len(self.answers) < target:
                self._progress.clear()
                await self._progress.wait()


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        return gauge((await http.get("/metrics")).text, name)


async def until_drained(url: str, deadline: float = 180) -> None:
    async with asyncio.timeout(deadline):
        while True:
            depth = await metric(url, "nxcloud_receiver_spool_depth")
            if depth == 0 and await metric(url, "nxcloud_receiver_kafka_up") == 1:
                return
            await asyncio.sleep(0.2)


async def verify(bootstrap: str, names: TopicNames, load: Load) -> int:
    """Every push answered success is on the raw topic; returns the exact repeats."""
    answered = load.succeeded
    records: list[Any] = await read_topic(
        bootstrap,
        names.dr_raw,
        lambda values: answered <= {v["fields"]["messageid"] for v in values},
        deadline=120,
    )
    receipts = [r["receipt_id"] for r in records]
    repeats = len(receipts) - len(set(receipts))
    print(f"answered success {len(answered)}, stored {len(records)}, exact repeats {repeats}")
    assert answered <= {r["fields"]["messageid"] for r in records}
    return repeats
