"""The worker's table of calls: a Faust table that can also forget calls from a timer."""

from __future__ import annotations

from typing import Any

import faust
from faust.streams import current_event


class CallTable(faust.Table):  # type: ignore[type-arg]
    def partition_for_key(self, key: Any) -> int | None:
        """Faust puts a change on the partition of the event being processed, and refuses
        a change made outside one (the expiry timer). There, None lets the producer's
        partitioner choose: the key's own partition, as on `calls-by-id`, keyed alike."""
        if current_event() is None:
            return None
        partition: int | None = super().partition_for_key(key)
        return partition
