"""Which forecasts go out together: the per-boundary batching decision, pure (no asyncio, no I/O).

Every series whose bar closed at boundary `t` (the bar's end, so series of different intervals
closing at one instant share a batch) asks for a forecast; the batch for `t` is complete once
every series expected there (`closes_at`: a 5m series is not expected at 12:01) has asked
(counted once per boundary, when its first request arrives: a per-request count was quadratic
at 1,000 series). A boundary that stays incomplete is flushed by the pipeline's coalescing timer
instead; a series given to another daemon is dropped from every open boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Generic, TypeVar

from db.records import SeriesKey

J = TypeVar("J")


def closes_at(boundary: datetime, key: SeriesKey) -> bool:
    """Whether `key` has a bar ending at `boundary` (bars are aligned to their interval in UTC).
    Counting every ready series made each boundary of a mixed 1m/5m set wait out the
    coalescing timer for series that close there never."""
    return int(boundary.timestamp()) % int(key.step.total_seconds()) == 0


class BoundaryBatcher(Generic[J]):
    """Open boundaries -> {series: request}, and how many series each one waits for."""

    def __init__(self) -> None:
        self._open: dict[datetime, dict[SeriesKey, J]] = {}
        self._expected: dict[datetime, int] = {}

    def add(self, t: datetime, key: SeriesKey, job: J, expected: Callable[[], int]) -> bool:
        """Add `key`'s request at boundary `t`; True when the boundary is complete (flush it now).
        `expected` is asked once per boundary, when it opens."""
        group = self._open.get(t)
        if group is None:
            group = self._open[t] = {}
            self._expected[t] = expected()
        group[key] = job  # a second request of the same series at `t` replaces the first
        return len(group) >= self._expected[t]

    def take(self, t: datetime) -> list[J]:
        """Close boundary `t` and return its requests (empty if it was not open)."""
        self._expected.pop(t, None)
        return list(self._open.pop(t, {}).values())

    def drop(self, keys: Iterable[SeriesKey]) -> None:
        gone = set(keys)
        for group in self._open.values():
            for k in gone & group.keys():
                del group[k]

    def open_boundaries(self) -> list[datetime]:
        return list(self._open)
