"""The worker, exiting at once as a SIGKILL would (no flush, no close) at its Nth call store
write (`CRASH_AT_STORE_WRITE`): the batch's events and its states in the changelog are
acknowledged, the store does not hold them yet. Run: python -m tests.crash_worker worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from connector.cli import main
from connector.worker import store

AT = int(os.environ["CRASH_AT_STORE_WRITE"])
writes = 0
write = store.Store.write


def crashing_write(
    self: store.Store, partition: int, changes: Mapping[bytes, bytes | None], offset: int
) -> None:
    global writes  # noqa: PLW0603 (one process, one count)
    writes += 1
    if writes == AT:
        os._exit(9)
    write(self, partition, changes, offset)


store.Store.write = crashing_write  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
