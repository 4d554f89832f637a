"""The quick benchmark: the ratios that matter, in a few minutes, before a change lands.

One broker, then: the worker against the no-op Faust agent built like it, over the same
records in turns (`bench/worker.py`'s throughput, smaller); DR push to call event at a
paced rate through the real receiver, and where the delay goes (its latency run, one
rate); the receiver against its no-op ceiling, plain HTTP (`bench/receiver.py`'s, short;
needs wrk). Ratios and CPU per record resist the shared machine's load better than rates;
the load average is printed with each part.
Run: `make bench-smoke` (or `python -m bench.smoke`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time

from bench import receiver, worker
from connector import admin
from connector.settings import Settings
from connector.topics import declare

# The targets of issue #35 (worker) and of the receiver's benchmark (docs/benchmarks.md).
WORKER_TARGET = 0.70
LATENCY_TARGET_MS = 100  # p99 at 1,000 DR/s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="calls in the worker run")
    parser.add_argument("--rounds", type=int, default=1, help="worker and no-op runs of each")
    parser.add_argument("--rate", type=int, default=300, help="DR pushes/s in the latency run")
    parser.add_argument("--seconds", type=int, default=20, help="length of the latency run")
    parser.add_argument(
        "--receiver-seconds", type=int, default=8, help="receiver and no-op, in all"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    began = time.monotonic()
    with worker.broker() as (bootstrap, scratch):
        started = receiver.load()
        kinds = (worker.WORKER, worker.NOOP)
        compared = asyncio.run(worker.compare(bootstrap, scratch, args.calls, args.rounds, kinds))
        worker.print_throughput(compared, started)
        delays = asyncio.run(worker.latency(bootstrap, scratch, [args.rate], args.seconds))[0]
        plain = Settings(kafka_bootstrap_servers=bootstrap)
        asyncio.run(admin.converge(plain, declare(plain)))
        ceiling = receiver.throughput(
            bootstrap, scratch, None, args.receiver_seconds, 64, paced=False
        )
    wall = statistics.median(compared.ratios(worker.NOOP, lambda rate: rate.per_second))
    cpu = statistics.median(compared.ratios(worker.NOOP, lambda rate: rate.per_cpu_second))
    total = next(iter(worker.STEPS))
    print(f"smoke ({time.monotonic() - began:.0f} s; {receiver.load()} at the end)")
    print(f"  worker / no-op Faust agent:     {wall:.0%} records/s, {cpu:.0%} records per CPU"
          f" second (target {WORKER_TARGET:.0%})")  # fmt: skip
    print(f"  DR push -> call event at {delays.achieved:,.0f}/s: p50"
          f" {delays.percentile(total, 0.5):,.0f} ms, p99 {delays.percentile(total, 0.99):,.0f} ms"
          f" ({delays.events:,} of {delays.pushes:,} events; target at 1,000/s: p99 <"
          f" {LATENCY_TARGET_MS} ms)")  # fmt: skip
    print(f"  receiver / no-op ceiling:       {ceiling.ratio:.0%} DR/s acknowledged, CPU per"
          f" request {ceiling.cpu_real_us:.0f} / {ceiling.cpu_noop_us:.0f} µs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
