"""Feed gaps: ranges of bars a live feed missed across a reconnect or a restart, and whether REST
filled them.

The ingest records a gap when a series resumes after a disconnect or a restart, and marks it
filled once the backfill covering it is stored, with the bars the database then holds in the
range: a range the exchange had no candles for keeps fewer bars than it spans (information, not
an error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, insert, or_, select, update

from db.dialect import chunks
from db.engine import Database
from db.records import SeriesKey, interval_seconds, to_unix
from db.schema import bars as bars_t
from db.schema import feed_gaps, series_is
from db.types import UtcDateTime


@dataclass(frozen=True, slots=True)
class FeedGap:
    id: int
    series: SeriesKey
    #: open times of the first missed bar and of the first bar after the gap (exclusive)
    start: datetime
    end: datetime
    detected_at: datetime
    #: bars stored in [start, end) once filled (0 until then)
    bars_filled: int
    filled_at: datetime | None

    @property
    def bars_missed(self) -> int:
        """Bars the range spans."""
        return (to_unix(self.end) - to_unix(self.start)) // interval_seconds(self.series.interval)


def record_gap(database: Database, series: SeriesKey, start: datetime, end: datetime,
               *, detected_at: datetime | None = None) -> int:
    """Store a detected gap [start, end), not filled yet; returns its id."""
    row = {
        "exchange": series.exchange, "symbol": series.symbol, "interval": series.interval,
        "gap_start": start, "gap_end": end, "detected_at": detected_at or datetime.now(UTC), "bars_filled": 0,
    }
    with database.begin() as conn:
        return int(conn.execute(insert(feed_gaps).values(row).returning(feed_gaps.c.id)).scalar_one())


def mark_gap_filled(database: Database, series: SeriesKey, start: datetime, end: datetime,
                    *, filled_at: datetime | None = None, only_complete: bool = False) -> int:
    """The backfill covering the unfilled gap(s) [start, end) of `series` is stored: record how many
    bars the range now holds, and when. Returns that count. `only_complete`: only if the range
    holds every bar it spans."""
    count = select(func.count()).where(
        series_is(bars_t, series), bars_t.c.open_time >= start, bars_t.c.open_time < end
    )
    with database.begin() as conn:
        n = int(conn.execute(count).scalar_one())
        if only_complete and n < (to_unix(end) - to_unix(start)) // interval_seconds(series.interval):
            return n
        conn.execute(
            update(feed_gaps)
            .where(series_is(feed_gaps, series), feed_gaps.c.gap_start == start, feed_gaps.c.gap_end == end,
                   feed_gaps.c.filled_at.is_(None))
            .values(bars_filled=n, filled_at=filled_at or datetime.now(UTC))
        )
    return n


def settle_gaps(database: Database, series: SeriesKey, *, until: datetime) -> list[FeedGap]:
    """Unfilled gaps of `series` ending by `until` whose range holds every bar it missed are
    marked filled (a run stopped after storing their backfill, before marking them); returns
    them. A range still short of bars stays unfilled: a failed backfill may have skipped it."""
    done = []
    for g in list_gaps(database, [series], unfilled=True):
        if g.end <= until and mark_gap_filled(database, series, g.start, g.end, only_complete=True) == g.bars_missed:
            done.append(g)
    return done


def list_gaps(database: Database, series: Iterable[SeriesKey] = (), *, unfilled: bool = False,
              limit: int | None = None) -> list[FeedGap]:
    """Recorded gaps, newest first (by start; then by detection); `series`: only these (default: all);
    `unfilled`: only those no backfill has filled yet; `limit`: the newest N."""
    keys = list(series)
    stmt = select(feed_gaps)
    if keys:
        stmt = stmt.where(or_(*(series_is(feed_gaps, k) for k in keys)))
    if unfilled:
        stmt = stmt.where(feed_gaps.c.filled_at.is_(None))
    stmt = stmt.order_by(feed_gaps.c.gap_start.desc(), feed_gaps.c.detected_at.desc(), feed_gaps.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    with database.engine.connect() as conn:
        return [
            FeedGap(r.id, SeriesKey(r.exchange, r.symbol, r.interval), r.gap_start, r.gap_end, r.detected_at,
                    r.bars_filled, r.filled_at)
            for r in conn.execute(stmt)
        ]



def gap_ends_holding(database: Database, bars: Mapping[SeriesKey, datetime]) -> dict[SeriesKey, datetime]:
    """Per series of `bars`, the latest end of a recorded gap, filled or not, whose range holds
    the bar opening at that time (series with none are left out). A restart reads it for its
    newest stored bars: one from REST inside a gap was stored while the series was live."""
    out: dict[SeriesKey, datetime] = {}
    with database.engine.connect() as conn:
        for part in chunks(list(bars.items()), 100):
            stmt = select(feed_gaps.c.exchange, feed_gaps.c.symbol, feed_gaps.c.interval,
                          func.max(feed_gaps.c.gap_end, type_=UtcDateTime())).where(or_(*(
                              and_(series_is(feed_gaps, k), feed_gaps.c.gap_start <= t, feed_gaps.c.gap_end > t)
                              for k, t in part))).group_by(feed_gaps.c.exchange, feed_gaps.c.symbol,
                                                           feed_gaps.c.interval)
            for ex, sym, iv, end in conn.execute(stmt):
                out[SeriesKey(ex, sym, iv)] = end
    return out
