"""The golden bars again, through the session's hot path: `scan_hot` rows (number texts, floats)
into `Aggregator.add_text`, instead of `parse` (Decimal trades) into `Aggregator.add`.

Same inputs, same aggregators, same digests as test_bars_golden.py (golden_bars.json, made before
the feed rewrite): the stored bars are byte-identical whichever path a trade takes. The sparse
simulator rendering is what the golden file holds; `test_dense_rendering_stores_the_csv_bars`
checks the dense one against the CSV bars themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from daemon.bars import Aggregator
from daemon.feeds import PROTOCOLS
from daemon.feeds.base import BadMessage, ExchangeProtocol, SimState
from daemon.feeds.simulator import synth_trade_count, synth_trades
from db.csvbars import read_bars_csv
from db.records import SeriesKey, decimal_text
from tests.daemon.test_bars_golden import GOLDEN, SIM_SOURCES, bar_line, digest, streams


def hot_trades(proto: ExchangeProtocol, text: str) -> list[tuple[str, int, str, float, str, str | None]]:
    """A frame's hot rows as (symbol, time, price text, price float, size text, trade id text);
    none when a symbol does not normalise (`parse` drops such a frame)."""
    _res, rows = proto.scan_hot(text)
    try:
        symbols = [proto.normal_symbol(r[0]) for r in rows]
    except BadMessage:
        return []
    return [
        (symbol, t, p, pf, q, None if tid is None else str(tid))
        for symbol, (_native, tid, t, p, pf, q, _side) in zip(symbols, rows, strict=True)
    ]


def hot_stream_bars(exchange: str, messages: Iterable[str], interval: str) -> list[str]:
    """`test_bars_golden.stream_bars` with the hot path's rows and `add_text`."""
    proto = PROTOCOLS[exchange]
    aggs: dict[str, Aggregator] = {}
    stored: list[str] = []
    last_us = 0
    for m in messages:
        for symbol, t, p, pf, q, tid in hot_trades(proto, m):
            agg = aggs.get(symbol)
            if agg is None:
                agg = aggs[symbol] = Aggregator(SeriesKey(exchange, symbol, interval), grace_s=0, late_allowance_s=3600)
            last_us = max(last_us, t)
            stored.extend(bar_line(u.bar) for u in agg.add_text(t, p, pf, q, tid))
    for sym in sorted(aggs):
        agg = aggs[sym]
        stored.extend(bar_line(u.bar) for u in agg.advance(agg.ceil(last_us + 1)))
    return stored


def hot_cases(shared: Path) -> dict[str, list[str]]:
    return {name: hot_stream_bars(*case) for name, case in streams(shared).items()}


@pytest.fixture(scope="module")
def hot_actual(shared_dir: Path) -> dict[str, list[str]]:
    return hot_cases(shared_dir)


@pytest.mark.parametrize("name", sorted(json.loads(GOLDEN.read_text())))
def test_hot_path_stores_the_golden_bars(hot_actual: dict[str, list[str]], name: str) -> None:
    golden = json.loads(GOLDEN.read_text())[name]
    bars = hot_actual[name]
    assert (len(bars), digest(bars)) == (golden["bars"], golden["bars_sha256"])


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@pytest.mark.parametrize("per_bar", [4, 50, 200])
def test_dense_rendering_stores_the_csv_bars(shared_dir: Path, exchange: str, per_bar: int) -> None:
    """Any density: every bar the aggregator closes has the CSV bar's exact text (open, high,
    low, close, volume), and as many trades as the simulator says it sent (its REST count)."""
    csv_name, symbol, _n = SIM_SOURCES["5m"]
    bars = read_bars_csv(shared_dir / "data" / csv_name, exchange=exchange, symbol=symbol, interval="5m")[:300]
    proto = PROTOCOLS[exchange]
    native = proto.native_symbol(symbol)
    msgs = [
        proto.render_trade(t, SimState(now_us=t.time_us))
        for t in synth_trades(exchange, symbol, native, bars, per_bar=per_bar)
    ]
    stored = {}
    agg = Aggregator(SeriesKey(exchange, symbol, "5m"), grace_s=0, late_allowance_s=3600)
    for m in msgs:
        _res, rows = proto.scan_hot(m)
        for _native, tid, t, p, pf, q, _side in rows:
            for u in agg.add_text(t, p, pf, q, tid):
                stored[u.bar.open_time] = u.bar
    for u in agg.advance(agg.ceil(agg.cursor_us + 1 if agg.cursor_us is not None else 0)):
        stored[u.bar.open_time] = u.bar
    counts = synth_trade_count(bars, per_bar)
    dense = 0
    for b in bars:
        got = stored[b.open_time]
        assert [decimal_text(x) for x in (got.open, got.high, got.low, got.close, got.volume)] == [
            decimal_text(x) for x in (b.open, b.high, b.low, b.close, b.volume)
        ], b
        n = counts[int(b.open_time.timestamp())]
        assert got.trade_count == n
        dense += n == per_bar
    assert dense >= 0.9 * len(bars)  # the density asked for is what the stream has
