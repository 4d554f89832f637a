"""Backfill benchmark: a 7-day backfill of the sandbox's history against the provider's floor.

The provider allows one request per second per account, so no backfill can be faster than
(pages needed) x 1 s. Run: `make bench-backfill` (or `python -m bench.backfill`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from connector.clock import utcnow
from connector.local.broker import BrokerConfig, LocalKafka, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=0.01, help="sandbox messages per second")
    parser.add_argument("--days", type=float, default=7.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        LocalKafka(BrokerConfig(Path(scratch) / "kafka", free_port(), free_port())) as kafka,
    ):
        port = free_port()
        history = args.days * 24 + 2
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "connector", "sandbox", "--port", str(port),
             "--rate", str(args.rate), "--history-hours", str(history), "--seed", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "NXCLOUD_APPKEY": "sandbox",
            "NXCLOUD_SECRETKEY": "sandbox",
            "NXCLOUD_CDR_URL": f"http://127.0.0.1:{port}/api/voiceSms/getVoiceCdr",
        }
        subprocess.run(
            [sys.executable, "-m", "connector", "topics"], env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        until = utcnow() - timedelta(minutes=1)
        since = until - timedelta(days=args.days) + timedelta(minutes=15)
        started = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "connector", "backfill",
                 "--since", since.isoformat(), "--until", until.isoformat()],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
        finally:
            sandbox.terminate()
            sandbox.wait(30)
        elapsed = time.monotonic() - started
    match = re.search(r"backfilled (\d+) rows in (\d+) pages", result.stdout)
    assert match, result.stdout + result.stderr
    rows, pages = int(match.group(1)), int(match.group(2))
    print(f"backfill benchmark: {args.days:g} days of sandbox history ({args.rate} messages/s)")
    print(f"  rows stored:          {rows}")
    print(f"  pages requested:      {pages}")
    print(f"  floor (pages x 1 s):  {pages:.0f} s")
    print(f"  backfill took:        {elapsed:.0f} s ({elapsed / pages:.2f} s per page)")
    print(f"  floor / actual:       {pages / elapsed:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
