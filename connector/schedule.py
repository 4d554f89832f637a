"""What the poller queries next, and its checkpoint. Pure: the clock is an argument."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from connector.cdr import LOOKBACK, MAX_WINDOW, SERVICES, Window
from connector.clock import rfc3339

LOOKBACK_MARGIN: Final = timedelta(minutes=10)


@dataclass(frozen=True)
class Cadence:
    window: timedelta
    settle: timedelta
    repoll_after: tuple[timedelta, ...]
    first_lookback: timedelta


@dataclass(frozen=True, order=True)
class Repoll:
    due: datetime
    window: Window
    step: int


@dataclass(frozen=True)
class Task:
    window: Window
    repoll: Repoll | None = None
    skipped: timedelta = timedelta(0)

    @property
    def kind(self) -> str:
        return "new" if self.repoll is None else "repoll"


@dataclass(frozen=True)
class Checkpoint:
    frontier: Mapping[int, datetime]
    repolls: tuple[Repoll, ...] = field(default=())

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "frontier": {str(s): rfc3339(t) for s, t in sorted(self.frontier.items())},
                "repolls": [
                    {**r.window.as_json(), "due": rfc3339(r.due), "step": r.step}
                    for r in self.repolls
                ],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        raw: dict[str, Any] = orjson.loads(data)
        return cls(
            frontier={int(s): _time(t) for s, t in raw["frontier"].items()},
            repolls=tuple(
                Repoll(
                    _time(r["due"]),
                    Window(int(r["service"]), _time(r["start"]), _time(r["end"])),
                    int(r["step"]),
                )
                for r in raw["repolls"]
            ),
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=moment.tzinfo)
    return moment - (moment - epoch) % step


def initial(now: datetime, cadence: Cadence) -> Checkpoint:
    start = _floor(now - cadence.settle - cadence.first_lookback, cadence.window)
    start = max(start, now - LOOKBACK + LOOKBACK_MARGIN)
    return Checkpoint(dict.fromkeys(SERVICES, start))


def next_task(checkpoint: Checkpoint, now: datetime, cadence: Cadence) -> Task | None:
    """The most overdue query, or None when nothing is due yet."""
    candidates: list[tuple[datetime, Task]] = []
    oldest_allowed = now - LOOKBACK + LOOKBACK_MARGIN
    settled = now - cadence.settle
    for service, frontier in sorted(checkpoint.frontier.items()):
        start = max(frontier, oldest_allowed)
        if start + cadence.window > settled:
            continue
        behind = settled - start
        span = cadence.window if behind < 2 * cadence.window else min(MAX_WINDOW, behind)
        span = max(cadence.window, span - span % cadence.window)
        window = Window(service, start, start + span)
        candidates.append((window.end + cadence.settle, Task(window, None, start - frontier)))
    for repoll in checkpoint.repolls:
        if repoll.due <= now and repoll.window.start >= oldest_allowed:
            candidates.append((repoll.due, Task(repoll.window, repoll)))
    if not candidates:
        return None
    return min(candidates, key=lambda candidate: candidate[0])[1]


def wake_at(checkpoint: Checkpoint, cadence: Cadence) -> datetime:
    """When the next query falls due, if nothing else happens."""
    dues = [frontier + cadence.window + cadence.settle for frontier in checkpoint.frontier.values()]
    dues.extend(repoll.due for repoll in checkpoint.repolls)
    return min(dues)


def complete(checkpoint: Checkpoint, task: Task, now: datetime, cadence: Cadence) -> Checkpoint:
    """The checkpoint once every row of `task` is acknowledged by the broker."""
    oldest_allowed = now - LOOKBACK + LOOKBACK_MARGIN
    repolls = [
        r for r in checkpoint.repolls if r != task.repoll and r.window.start >= oldest_allowed
    ]
    frontier = dict(checkpoint.frontier)
    if task.repoll is None:
        frontier[task.window.service] = task.window.end
        step = 0
    else:
        step = task.repoll.step + 1
    if step < len(cadence.repoll_after):
        repolls.append(Repoll(task.window.end + cadence.repoll_after[step], task.window, step))
    return replace(checkpoint, frontier=frontier, repolls=tuple(sorted(repolls)))
