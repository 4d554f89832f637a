"""A file the worker touches on a timer, so a probe can tell its event loop still runs.

The worker serves no HTTP (Faust's web server is off), so its Kubernetes probes run
`python -m connector.worker.heartbeat PATH MAX_AGE_SECONDS`: exit 0 when PATH was touched within
MAX_AGE_SECONDS, 1 otherwise (missing, or stale because the loop is stuck). With `--ready`
(the readiness probe) it also fails, saying why, while the file NOT_READY beside PATH
exists: the worker writes it while its call store catches up from the changelog and
while it waits for the schema registry.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

FILE_NAME: Final = "heartbeat"
INTERVAL_SECONDS: Final = 10.0
NOT_READY: Final = "not-ready"


def beat(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def age(path: Path, now: float) -> float | None:
    """Seconds since `path` was last touched, or None when it does not exist."""
    try:
        return max(0.0, now - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def fresh(path: Path, max_age: float, now: float) -> bool:
    seconds = age(path, now)
    return seconds is not None and seconds <= max_age


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ready = args[2:] == ["--ready"]
    if len(args) != 2 and not ready:
        print(
            "usage: python -m connector.worker.heartbeat PATH MAX_AGE_SECONDS [--ready]",
            file=sys.stderr,
        )
        return 2
    path, max_age = Path(args[0]), float(args[1])
    if ready and (path.parent / NOT_READY).exists():
        reason = (path.parent / NOT_READY).read_text(errors="replace").strip()
        print(f"not ready: {reason}", file=sys.stderr)
        return 1
    seconds = age(path, time.time())
    if seconds is None:
        print(f"no heartbeat at {path}", file=sys.stderr)
        return 1
    if seconds > max_age:
        print(f"heartbeat {seconds:.0f} s old, more than {max_age:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
