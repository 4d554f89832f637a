"""The commands run as processes, as a user runs them, and what they print."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from connector.local.broker import free_port


def read_until(
    process: subprocess.Popen[str], wanted: str, deadline: float, *, anywhere: bool = False
) -> str:
    """The first output line that starts with (or, `anywhere`, contains) `wanted`.

    The process's output keeps being drained afterwards, so a chatty child never blocks
    on a full pipe. Output that ends without the line fails at once, with what it said.
    """
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stream = process.stdout

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(f"exited before a line with {wanted!r}; said {seen[-20:]!r}")
        seen.append(line)
        if (wanted in line) if anywhere else line.startswith(wanted):
            return line.strip()
    raise AssertionError(f"no line with {wanted!r}; saw {seen[-20:]!r}")


def sandbox_poller_env(env: dict[str, str], url: str, account: str) -> dict[str, str]:
    """`env` for a poller of the sandbox at `url`: short windows, small pages."""
    return {
        **env,
        "NXCLOUD_APPKEY": "sandbox",
        "NXCLOUD_SECRETKEY": "sandbox",
        "NXCLOUD_CDR_URL": url + "/api/voiceSms/getVoiceCdr",
        "NXCLOUD_ACCOUNT": account,
        "NXCLOUD_POLLER_WINDOW_SECONDS": "10",
        "NXCLOUD_POLLER_SETTLE_SECONDS": "4",
        "NXCLOUD_POLLER_FIRST_LOOKBACK_SECONDS": "60",
        "NXCLOUD_POLLER_REPOLL_AFTER_SECONDS": "600",
        "NXCLOUD_POLLER_PAGE_SIZE": "5",
        "NXCLOUD_POLLER_METRICS_PORT": str(free_port()),
    }


def start_poller(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "poller"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
