"""Structured logs: one JSON object per line. Fields of a DR are never logged at INFO."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final

import orjson
from aiokafka.errors import for_code

from connector.clock import rfc3339
from connector.outage import Throttle

# uvicorn's color_message repeats the message with ANSI colour codes.
STANDARD: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "color_message",
}  # fmt: skip
ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KAFKA_ERROR: Final = re.compile(r"\[Error (\d+)\] ")


class Retried(logging.Filter):
    """aiokafka logs at ERROR what it retries by itself: a coordinator or a partition leader
    not elected yet, as right after a broker or a topic starts. That heals alone: a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka"):
            found = KAFKA_ERROR.search(record.getMessage())
            if found is not None and getattr(for_code(int(found[1])), "retriable", False):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": rfc3339(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": ANSI.sub("", record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in STANDARD:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr at `level` (NXCLOUD_LOG_LEVEL) for every logger; httpx's line
    per request only at DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Retried())
    handler.addFilter(Throttle("aiokafka"))
    handler.addFilter(Throttle("connector.receiver.app", every=10.0, level=logging.ERROR))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
