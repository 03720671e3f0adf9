"""Bar storage: idempotent upserts and reads.

Writing the same bars twice changes nothing (no row is touched, `updated_at` stays); a bar whose
values differ replaces the stored one (a corrected or amended bar).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import and_, func, or_, select

from db.cluster import Fence, lease_filter
from db.dialect import chunks, insert_for
from db.engine import Database
from db.records import Bar, SeriesKey
from db.schema import bars as bars_t
from db.schema import series_is
from db.types import UtcDateTime

BATCH_ROWS = 2000
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "trade_count")


def _row(bar: Bar, now: datetime) -> dict[str, Any]:
    return {
        "exchange": bar.exchange,
        "symbol": bar.symbol,
        "interval": bar.interval,
        "open_time": bar.open_time,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "trade_count": bar.trade_count,
        "source": bar.source,
        "updated_at": now,
    }


def upsert_bars(database: Database, bars: Iterable[Bar], *, batch_rows: int = BATCH_ROWS,
                fence: Fence | None = None) -> int:
    """Insert or correct bars in one transaction; returns how many rows were inserted or changed.
    With `fence` (a daemon sharing the database), bars of series it no longer owns are refused."""
    now = datetime.now(UTC)
    rows = [_row(b, now) for b in bars]
    if not rows:
        return 0
    stmt = insert_for(database, bars_t)
    excluded = stmt.excluded
    changed = or_(*(bars_t.c[c].is_distinct_from(excluded[c]) for c in _VALUE_COLUMNS))
    stmt = stmt.on_conflict_do_update(
        index_elements=["exchange", "symbol", "interval", "open_time"],
        set_={c: excluded[c] for c in (*_VALUE_COLUMNS, "source", "updated_at")},
        where=changed,
    ).returning(bars_t.c.open_time)
    written = 0
    with database.begin() as conn:
        rows = lease_filter(conn, fence, rows, "bars")
        for batch in chunks(rows, batch_rows):
            written += len(conn.execute(stmt, batch).all())
    return written


def _bar(row: Any) -> Bar:
    return Bar(
        exchange=row.exchange,
        symbol=row.symbol,
        interval=row.interval,
        open_time=row.open_time,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        trade_count=row.trade_count,
        source=row.source,
    )


def _series_where(series: SeriesKey, since: datetime | None, until: datetime | None) -> Any:
    cond = [series_is(bars_t, series)]
    if since is not None:
        cond.append(bars_t.c.open_time >= since)
    if until is not None:
        cond.append(bars_t.c.open_time < until)
    return and_(*cond)


def read_bars(
    database: Database,
    series: SeriesKey,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Bar]:
    """Bars of one series with `since <= open_time < until`, oldest first unless `newest_first`."""
    order = bars_t.c.open_time.desc() if newest_first else bars_t.c.open_time.asc()
    stmt = select(bars_t).where(_series_where(series, since, until)).order_by(order)
    if limit is not None:
        stmt = stmt.limit(limit)
    with database.engine.connect() as conn:
        return [_bar(r) for r in conn.execute(stmt)]


def latest_bar(database: Database, series: SeriesKey) -> Bar | None:
    found = read_bars(database, series, limit=1, newest_first=True)
    return found[0] if found else None


def latest_bars(database: Database, series: Iterable[SeriesKey]) -> dict[SeriesKey, Bar]:
    """The newest stored bar of each of `series` (those with any), in one query."""
    wanted = set(series)
    if not wanted:
        return {}
    newest = (
        select(bars_t.c.exchange, bars_t.c.symbol, bars_t.c.interval,
               func.max(bars_t.c.open_time, type_=UtcDateTime()).label("t"))
        .group_by(bars_t.c.exchange, bars_t.c.symbol, bars_t.c.interval)
        .subquery()
    )
    stmt = select(bars_t).join(newest, and_(
        bars_t.c.exchange == newest.c.exchange, bars_t.c.symbol == newest.c.symbol,
        bars_t.c.interval == newest.c.interval, bars_t.c.open_time == newest.c.t))
    with database.engine.connect() as conn:
        found = [_bar(r) for r in conn.execute(stmt)]
    return {b.series: b for b in found if b.series in wanted}


def last_bars(database: Database, series: SeriesKey, n: int, *, until: datetime | None = None) -> list[Bar]:
    """The newest `n` bars (before `until`), oldest first: what a forecaster's window needs."""
    return list(reversed(read_bars(database, series, until=until, limit=n, newest_first=True)))


def bars_frame(
    database: Database, series: SeriesKey, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    """Bars as float64 columns for models (exact values stay in the database)."""
    stmt = (
        select(bars_t.c.open_time, *(bars_t.c[c] for c in _VALUE_COLUMNS))
        .where(_series_where(series, since, until))
        .order_by(bars_t.c.open_time)
    )
    with database.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    index = pd.DatetimeIndex([r[0] for r in rows], name="open_time")
    if len(index) and index.tz is None:
        index = index.tz_localize(UTC)
    data = {
        c: np.array([np.nan if r[i + 1] is None else float(r[i + 1]) for r in rows], dtype=np.float64)
        for i, c in enumerate(_VALUE_COLUMNS)
    }
    return pd.DataFrame(data, index=index)


@dataclass(frozen=True, slots=True)
class SeriesStats:
    series: SeriesKey
    bars: int
    first: datetime
    last: datetime


def series_stats(database: Database) -> list[SeriesStats]:
    """Per stored series: bar count and first/last bar open time."""
    stmt = (
        select(
            bars_t.c.exchange,
            bars_t.c.symbol,
            bars_t.c.interval,
            func.count(),
            func.min(bars_t.c.open_time, type_=UtcDateTime()),
            func.max(bars_t.c.open_time, type_=UtcDateTime()),
        )
        .group_by(bars_t.c.exchange, bars_t.c.symbol, bars_t.c.interval)
        .order_by(bars_t.c.exchange, bars_t.c.symbol, bars_t.c.interval)
    )
    out = []
    with database.engine.connect() as conn:
        for ex, sym, iv, n, first, last in conn.execute(stmt):
            out.append(SeriesStats(SeriesKey(ex, sym, iv), int(n), first, last))
    return out


def list_series(database: Database) -> list[SeriesKey]:
    return [s.series for s in series_stats(database)]


def count_bars(database: Database, series: SeriesKey, *, since: datetime | None = None) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(_series_where(series, since, None))).scalar_one())
