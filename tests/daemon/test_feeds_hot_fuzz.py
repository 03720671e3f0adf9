"""Hostile frames through the session's hot path (framefuzz.py mutations of the real captures).

Two aggregations of the same frames must store the same bars, text for text: `parse` (exact
Decimal trades) into `Aggregator.add`, and `scan_hot` (number texts, floats) into
`Aggregator.add_text`. And a live `FeedSession` takes every frame without raising, counting as
malformed exactly the frames the exact classification (`scan_safe`) calls malformed (`parse` also
drops a frame whose symbol does not normalise; the session counts that as an unknown symbol).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.bars import Aggregator
from daemon.feeds import PROTOCOLS
from daemon.feeds.session import Backfill, FeedSession, SessionOptions
from db.records import Bar, SeriesKey
from tests.daemon.framefuzz import Mutator, seed_bars, seed_frames
from tests.daemon.test_bars_golden import bar_line
from tests.daemon.test_bars_golden_hot import hot_trades

FRAMES = 3000


@pytest.fixture(scope="module")
def bars(shared_dir: Path) -> list[Bar]:
    return seed_bars(shared_dir)


def _aggregator(aggs: dict[str, Aggregator], exchange: str, symbol: str) -> Aggregator:
    agg = aggs.get(symbol)
    if agg is None:
        agg = aggs[symbol] = Aggregator(SeriesKey(exchange, symbol, "5m"), grace_s=0, late_allowance_s=3600)
    return agg


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_hot_path_stores_what_the_exact_path_stores(shared_dir: Path, bars: list[Bar], exchange: str) -> None:
    proto = PROTOCOLS[exchange]
    seeds = seed_frames(shared_dir, exchange, bars)
    frames = seeds + [f.text for f in Mutator(exchange, seeds, seed=11).frames(FRAMES)]
    exact: dict[str, Aggregator] = {}
    hot: dict[str, Aggregator] = {}
    exact_lines: list[str] = []
    hot_lines: list[str] = []
    malformed = 0
    for text in frames:
        res = proto.parse(text)
        malformed += proto.scan_safe(text)[0].kind == "malformed"
        for t in res.trades:
            exact_lines.extend(bar_line(u.bar) for u in _aggregator(exact, exchange, t.symbol).add(t))
        for symbol, t_us, p, pf, q, tid in hot_trades(proto, text):
            agg = _aggregator(hot, exchange, symbol)
            hot_lines.extend(bar_line(u.bar) for u in agg.add_text(t_us, p, pf, q, tid))
    for aggs, lines in ((exact, exact_lines), (hot, hot_lines)):  # close what is left, as at end of input
        for symbol in sorted(aggs):
            agg = aggs[symbol]
            if agg.cursor_us is not None:
                lines.extend(bar_line(u.bar) for u in agg.advance(agg.cursor_us + 2 * agg.step_us))
    assert len(exact_lines) > 10 and hot_lines == exact_lines

    # a live session (feed clock) on every symbol seen: nothing escapes, malformed frames counted
    series = [SeriesKey(exchange, s, "5m") for s in sorted(exact)]
    session = FeedSession(proto, series, SessionOptions(backfill_days=0.0), wall_clock=False)
    session.up(0.0, 0.0)
    pending = session.tick(None, 11.0)
    for text in frames:
        pending += session.message(text, 0.0, 11.0)
        while any(isinstance(a, Backfill) for a in pending):
            nxt = []
            for a in pending:
                if isinstance(a, Backfill):
                    nxt.extend(session.backfilled(a, a.end_us, [], last=True))
            pending = nxt
        pending = []
    assert sum(session.stats.malformed.values()) == malformed > FRAMES // 4
