"""Feed gaps on both engines: recorded, filled with the bars the range holds, listed newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from db.bars import upsert_bars
from db.engine import Database
from db.gaps import list_gaps, mark_gap_filled, record_gap
from db.records import Bar, SeriesKey

A = SeriesKey("binance", "BTC-USDT", "5m")
B = SeriesKey("coinbase", "BTC-USD", "1m")
T = datetime(2021, 1, 1, tzinfo=UTC)
M5 = timedelta(minutes=5)


def bar(t: datetime) -> Bar:
    return Bar(A.exchange, A.symbol, A.interval, t, *(Decimal(1),) * 4, Decimal(1), 1, "backfill")


def test_gaps_are_recorded_filled_and_listed(any_db: Database) -> None:
    first = record_gap(any_db, A, T, T + 4 * M5)
    record_gap(any_db, B, T + M5, T + 2 * M5)
    later = record_gap(any_db, A, T + 10 * M5, T + 12 * M5)
    # the exchange had candles for 3 of the 4 missed bars; a bar outside the range is not counted
    upsert_bars(any_db, [bar(T), bar(T + M5), bar(T + 3 * M5), bar(T + 4 * M5)])
    assert mark_gap_filled(any_db, A, T, T + 4 * M5) == 3
    gaps = list_gaps(any_db)
    assert [g.id for g in gaps] == [later, next(g.id for g in gaps if g.series == B), first]
    done = gaps[-1]
    assert (done.start, done.end, done.bars_missed, done.bars_filled) == (T, T + 4 * M5, 4, 3)
    assert done.filled_at is not None and done.detected_at.tzinfo is not None
    assert [g.id for g in list_gaps(any_db, [A], unfilled=True)] == [later]
    assert [g.series for g in list_gaps(any_db, [B])] == [B]
    assert [g.id for g in list_gaps(any_db, [A], limit=1)] == [later]
    # filled once: a second report changes nothing
    upsert_bars(any_db, [bar(T + 2 * M5)])
    mark_gap_filled(any_db, A, T, T + 4 * M5)
    assert next(g for g in list_gaps(any_db) if g.id == first).bars_filled == 3
