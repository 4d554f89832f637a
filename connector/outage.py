"""An outage of Kafka as the logs tell it: once when it starts, a summary now and then,
once when it ends; never a line per failed attempt."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

SUMMARY_EVERY: Final = 30.0


class Outage:
    def __init__(
        self,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        every: float = SUMMARY_EVERY,
    ) -> None:
        self._log = log
        self._clock = clock
        self._every = every
        self._since: float | None = None
        self._last_summary = 0.0
        self._errors: Counter[str] = Counter()

    def failed(self, exc: BaseException, depth: int) -> None:
        now = self._clock()
        self._errors[type(exc).__name__] += 1
        if self._since is None:
            self._since = self._last_summary = now
            self._log.warning(
                "kafka unavailable, spooling", extra={"error": type(exc).__name__, "depth": depth}
            )
        elif now - self._last_summary >= self._every:
            self._last_summary = now
            self._log.warning(
                "kafka still unavailable",
                extra={
                    "seconds": round(now - self._since, 1),
                    "errors": dict(self._errors),
                    "depth": depth,
                },
            )

    def ended(self, depth: int) -> None:
        if self._since is None:
            return
        self._log.info(
            "kafka available again",
            extra={
                "seconds": round(self._clock() - self._since, 1),
                "errors": dict(self._errors),
                "depth": depth,
            },
        )
        self._since = None
        self._errors.clear()


class Throttle(logging.Filter):
    """At most one record per logger and message template every `every` seconds for the
    loggers under `prefix` at `level` or above (aiokafka logs each failed connection
    attempt; the receiver one line per push it cannot store while the spool is full)."""

    def __init__(
        self,
        prefix: str,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._level = level
        self._every = every
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._level or not record.name.startswith(self._prefix):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._suppressed[key] += 1
            return False
        self._last[key] = now
        record.suppressed = self._suppressed.pop(key, 0)
        return True
