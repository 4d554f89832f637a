"""The terminal of `up`: each component's full log to a file, only its warnings and errors
on the terminal (everything with --verbose), prefixed with its name, under a live status
of one line per component (redrawn in place on a terminal, printed now and then otherwise).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

import orjson

ALARMING: Final = frozenset({"warning", "error", "critical"})
PLAIN: Final = ("time", "level", "logger", "message", "exception")
NAME_WIDTH: Final = 9


def alarming(line: str) -> bool:
    """A log line to show without --verbose: a warning or an error. A line that is not one
    of our JSON lines (a crash's traceback, a library's print) is shown too."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return bool(line.strip())
    return not isinstance(entry, dict) or str(entry.get("level", "")).lower() in ALARMING


def shown(name: str, line: str) -> str:
    """`line` as the terminal shows it: the component's name, level, message, its fields."""
    name += " " if len(name) >= NAME_WIDTH else ""  # the reconciler's is longer
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict):
        return f"{name:<{NAME_WIDTH}}{line.rstrip()}"
    fields = " ".join(f"{key}={value}" for key, value in entry.items() if key not in PLAIN)
    text = f"{name:<{NAME_WIDTH}}{str(entry.get('level', '')).upper():<8}{entry.get('message')}"
    text += f"  {fields}" if fields else ""
    if entry.get("exception"):
        text += "\n" + "\n".join(f"{name:<{NAME_WIDTH}}{row}"
                                 for row in str(entry["exception"]).splitlines())  # fmt: skip
    return text


class Console:
    def __init__(self, out: IO[str], *, live: bool, verbose: bool) -> None:
        self.out, self.live, self.verbose = out, live, verbose
        self.lock = threading.Lock()
        self.drawn = 0  # status lines on the screen below the log lines (live only)
        self.last: Sequence[str] = ()

    def say(self, text: str) -> None:
        """A message of `up`'s own; the status is not drawn again until the next one."""
        with self.lock:
            self._clear()
            self.last = ()
            print(text, file=self.out, flush=True)

    def status(self, lines: Sequence[str]) -> None:
        with self.lock:
            self._clear()
            self.last = lines
            self._draw()

    def _draw(self) -> None:
        for line in self.last:
            print(line, file=self.out)
        self.out.flush()
        self.drawn = len(self.last) if self.live else 0

    def follow(self, name: str, stream: IO[bytes], log: Path) -> threading.Thread:
        """Copy `stream` to `log`, and its warnings and errors to the terminal."""

        def pump() -> None:
            # Ctrl-C and SIGTERM are for `up`'s main thread, which waits for them.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            with log.open("ab") as file:
                for raw in stream:
                    file.write(raw)
                    file.flush()
                    line = raw.decode("utf-8", errors="replace")
                    if self.verbose or alarming(line):
                        self.show(shown(name, line))

        thread = threading.Thread(target=pump, name=f"log-{name}", daemon=True)
        thread.start()
        return thread

    def show(self, text: str) -> None:
        with self.lock:
            if not self.live:
                print(text, file=self.out, flush=True)
                return
            self._clear()
            print(text, file=self.out, flush=True)
            self._draw()

    def _clear(self) -> None:
        if self.live and self.drawn:
            self._erase(self.drawn)
            self.drawn = 0

    def _erase(self, lines: int) -> None:
        if lines:
            self.out.write(f"\x1b[{lines}F\x1b[J")  # up to the first status line, clear below
