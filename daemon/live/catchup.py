"""Catch-up: forecasting bars that did not arrive live, told apart from the live path. Pure.

The rule, one and clock-free (the bars' own times say nothing: the demo and the tests replay
2020 through the simulator): the pipeline is *catching up* from the moment it is handed bars
that did not arrive live on a feed — stored bars without a forecast set, replayed at a start,
a takeover or a resync (`frontier`), and the bars a REST backfill fetched (the outage before a
restart, a fresh install's newest history, a reconnect's gap) — until every forecast batch
queued meanwhile is stored. A batch queued while catching up is part of the backlog or waits
behind it, so its latency says how long the backlog took, not how fast the model answers a
closing bar: it goes to `barcast_forecast_catchup_latency_seconds`, not to the live
`barcast_forecast_latency_seconds`; and a full forecast queue then is the back-pressure that
paces the backlog, not a model slower than the bars (no warning, not counted as full).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from db.records import iso


@dataclass
class Episode:
    """One catch-up: from the first bar handed over behind until its last batch is stored."""

    started: float  # monotonic
    started_at: datetime
    bars: int = 0
    batches: int = 0
    forecasts: int = 0
    sources: list[str] = field(default_factory=list)
    series: set[str] = field(default_factory=set)

    @property
    def routine(self) -> bool:
        """At most one bar a series: a REST poll's bar while a feed is down, or the newest bar
        of a restart; worth a debug line, not two info lines a bar through a long outage."""
        return self.bars <= len(self.series)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"since": iso(self.started_at), "sources": list(self.sources), "bars": self.bars,
                "batches": self.batches, "forecasts": self.forecasts, "seconds": round(now - self.started, 3)}


class CatchUp:
    """Whether the pipeline is catching up, and the counts its log lines and `status` show.

    `hold`/`release` bracket a caller handing bars over (so the episode cannot end between two
    of its bars while the queue happens to be empty); `queued`/`stored` bracket each batch
    queued while catching up. The episode ends once nothing holds it, none of its batches is
    unstored and the caller says nothing else is pending (`finish(idle=...)`)."""

    def __init__(self) -> None:
        self.current: Episode | None = None
        self.last: dict[str, Any] | None = None
        self._holds = 0
        self._queued = 0

    @property
    def active(self) -> bool:
        return self.current is not None

    def behind(self, bars: int, source: str, now: float, now_wall: datetime,
               series: Collection[str] = ()) -> str | None:
        """`bars` more bars to forecast that did not arrive live. What is news for the log:
        "opened" (an episode), "joined" (a source the episode did not have yet: a start replays
        stored bars, then backfills the outage; one line each, not one per page), else None."""
        if bars <= 0:
            return None
        opened = self.current is None
        if self.current is None:
            self.current = Episode(now, now_wall)
        ep = self.current
        ep.bars += bars
        ep.series.update(series)
        if source in ep.sources:
            return None
        ep.sources.append(source)
        return "opened" if opened else "joined"

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1

    def queued(self) -> None:
        """A batch was queued while catching up."""
        self._queued += 1

    def stored(self, forecasts: int) -> None:
        """A batch queued while catching up is done (`forecasts` of it stored; 0 if it failed)."""
        self._queued -= 1
        if self.current is not None:
            self.current.batches += 1
            self.current.forecasts += forecasts

    def finish(self, now: float, now_wall: datetime, *, idle: bool) -> Episode | None:
        """End the episode if nothing of it is left (`idle`: no request waits to be batched);
        returns the episode that ended."""
        ep = self.current
        if ep is None or self._holds or self._queued or not idle:
            return None
        self.current = None
        self.last = {**ep.as_dict(now), "ended_at": iso(now_wall)}
        return ep

    def status(self, now: float) -> dict[str, Any]:
        """`status`'s `catch_up`: the episode in progress (None when caught up) and the last one."""
        return {"active": self.current is not None,
                "current": self.current.as_dict(now) if self.current is not None else None,
                "last": self.last}
