"""Which stored bars of a series still need a forecast: the one place that decides it.

A daemon keeps a series' window in memory and forecasts each bar as it extends the window. That
breaks whenever bars reach it out of order or through another daemon: a takeover (the dead
owner stored bars it never forecast), a lagging owner (its forecasts fenced off after its lease
ran out), a backfill page stored after the live bar that follows it (the window restarted at the
gap, then the late bar was older than the window). In all of them the database holds the truth,
so the window is rebuilt from stored bars and the bars without a forecast set are replayed, in
order, each with the window of exactly the bars before it. Pure: bar times in, an index out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime


def replay_start(times: Sequence[datetime], forecast: Collection[datetime], newest: datetime | None) -> int:
    """Index of the first of `times` (a series' newest stored bars, oldest first) to replay: the
    first bar without a forecast set that comes after a forecast one, or after `newest` (the
    series' newest forecast, possibly older than every bar here: a long outage). Bars before any
    forecast are history (a fresh install's backfill) and never replayed; `len(times)` when
    nothing is to be replayed or the series was never forecast."""
    if newest is None:
        return len(times)
    seen = False
    for i, t in enumerate(times):
        if t in forecast:
            seen = True
        elif seen or t > newest:
            return i
    return len(times)
