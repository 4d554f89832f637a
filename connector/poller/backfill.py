"""`nxcloud-connector backfill`: poll a past range once, with progress, then exit."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime, timedelta
from typing import TextIO

import httpx

from connector import admin, cdr, clients
from connector.errors import ConfigError, ConnectorError
from connector.poller.loop import Leadership, Poller
from connector.schedule import LOOKBACK_MARGIN
from connector.settings import Settings
from connector.topics import TopicNames

ELECTION_WAIT = 20.0


def parse_moment(text: str, settings: Settings, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=settings.nxcloud_timezone)


def windows(since: datetime, until: datetime) -> list[cdr.Window]:
    found = []
    for service in cdr.SERVICES:
        start = since
        while start < until:
            end = min(start + cdr.MAX_WINDOW, until)
            found.append(cdr.Window(service, start, end))
            start = end
    return found


class Progress:
    def __init__(self, windows: int, interval: float, out: TextIO) -> None:
        self.windows = windows
        self.interval = interval
        self.out = out
        self.started = time.monotonic()
        self.done_windows = 0
        self.pages_done = 0
        self.rows = 0

    def page(self, window_pages: int, page: int, rows: int) -> None:
        self.pages_done += 1
        self.rows += rows
        left_here = window_pages - page
        per_window = self.pages_done / (self.done_windows + page / window_pages)
        left = left_here + per_window * (self.windows - self.done_windows - 1)
        done = (self.done_windows + page / window_pages) / self.windows
        bar = "#" * int(done * 30)
        self.out.write(
            f"\r[{bar:<30}] {done:4.0%} windows {self.done_windows}/{self.windows} "
            f"pages {self.pages_done} rows {self.rows} "
            f"ETA {max(0.0, left) * self.interval:5.0f} s "
        )
        self.out.flush()

    def window_done(self) -> None:
        self.done_windows += 1


async def backfill(
    settings: Settings,
    since: datetime,
    until: datetime,
    names: TopicNames | None = None,
    out: TextIO = sys.stderr,
    *,
    now: datetime,
) -> tuple[int, int]:
    """Poll [since, until) for both services; return (pages, rows). `until` must not be
    after `now`, nor `since` past the provider's 7 days before it."""
    if since < now - cdr.LOOKBACK + LOOKBACK_MARGIN:
        raise ConfigError("--since: the provider serves only the last 7 days (minus 10 minutes)")
    if not since < until <= now:
        raise ConfigError("--until must be after --since and not in the future")
    settings.credentials()
    since = since.replace(microsecond=0)
    until = until.replace(microsecond=0) + (
        timedelta(seconds=1) if until.microsecond else timedelta(0)
    )
    names = names or TopicNames.of(settings)
    await clients.check(settings)
    async with httpx.AsyncClient(timeout=settings.poller_http_timeout_seconds) as http:
        poller = Poller(settings, names, http)
        consumer, producer = poller.membership(), poller.producer()
        leadership = Leadership(poller.partition)
        consumer.subscribe([names.poller_state], listener=leadership)
        await consumer.start()
        await producer.start()
        try:
            deadline = time.monotonic() + ELECTION_WAIT
            while not leadership.assigned:
                if time.monotonic() > deadline:
                    raise ConnectorError(
                        f"another poller is active for account {settings.account!r}: "
                        "stop it first (the provider allows one request per second per account)"
                    )
                await consumer.getmany(timeout_ms=300)
            planned = windows(since, until)
            progress = Progress(len(planned), 1 / poller.bucket.rate, out)
            rows = 0
            for window in planned:
                rows += await poller.fetch(window, producer, progress.page)
                progress.window_done()
                await consumer.getmany(timeout_ms=0)
            out.write("\n")
            return progress.pages_done, rows
        finally:
            await asyncio.gather(admin.stop(consumer), producer.stop())
