"""The per-boundary batching decision, as a pure table of requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.live.batcher import BoundaryBatcher
from db.records import SeriesKey

A, B, C = (SeriesKey("binance", s) for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT"))
T0 = datetime(2021, 7, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_boundary_is_complete_once_every_expected_series_asked_and_counts_once() -> None:
    b: BoundaryBatcher[str] = BoundaryBatcher()
    asked: list[int] = []

    def expected() -> int:
        asked.append(1)
        return 3

    assert [b.add(T0, k, f"{k.symbol}@0", expected) for k in (A, B)] == [False, False]
    assert b.add(T0, A, "again", expected) is False  # a repeat replaces, it does not count twice
    assert b.add(T1, A, "A@1", lambda: 1) is True  # boundaries are independent
    assert b.add(T0, C, "SOL-USDT@0", expected) is True
    assert len(asked) == 1  # the expected count is taken when the boundary opens, not per request
    assert sorted(b.take(T0)) == ["ETH-USDT@0", "SOL-USDT@0", "again"]
    assert b.take(T0) == [] and b.open_boundaries() == [T1]


def test_dropped_series_leave_every_open_boundary() -> None:
    b: BoundaryBatcher[str] = BoundaryBatcher()
    for t in (T0, T1):
        for k in (A, B):
            b.add(t, k, f"{k.symbol}@{t:%M}", lambda: 3)
    b.drop([A])
    assert b.take(T0) == ["ETH-USDT@00"] and b.take(T1) == ["ETH-USDT@05"]
