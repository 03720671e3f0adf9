"""The pure aggregator against an independent pandas reference, plus its edge rules."""

from __future__ import annotations

import random
from decimal import Decimal

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.bars import Aggregator, aggregate
from daemon.feeds.base import Trade
from db.records import Bar, SeriesKey

SERIES = SeriesKey("binance", "BTC-USDT", "5m")
STEP = 300_000_000
BASE = 1_608_000_000 * 1_000_000 - (1_608_000_000 * 1_000_000) % STEP  # an aligned µs time


def tr(t_us: int, price: str | Decimal, size: str | Decimal = "1", tid: str | None = None) -> Trade:
    return Trade("binance", "BTC-USDT", "BTCUSDT", tid, t_us, Decimal(price), Decimal(size), "buy")


def reference(trades: list[Trade]) -> list[tuple]:
    """OHLCV per bucket by pandas groupby (stable time order), flat bars filled in between."""
    df = pd.DataFrame({"t": [x.time_us for x in trades], "p": [x.price for x in trades], "s": [x.size for x in trades]})
    df = df.sort_values("t", kind="stable")
    df["b"] = df["t"] // STEP * STEP
    g = df.groupby("b", sort=True)
    ref = pd.DataFrame(
        {
            "o": g["p"].first(),
            "h": g["p"].max(),
            "l": g["p"].min(),
            "c": g["p"].last(),
            "v": g["s"].agg(lambda s: sum(s, Decimal(0))),
            "n": g["p"].size(),
        }
    )
    out = []
    prev_close = None
    for b in range(int(ref.index.min()), int(ref.index.max()) + STEP, STEP):
        if b in ref.index:
            r = ref.loc[b]
            out.append((b, r.o, r.h, r.l, r.c, r.v, int(r.n)))
            prev_close = r.c
        else:
            out.append((b, prev_close, prev_close, prev_close, prev_close, Decimal(0), 0))
    return out


def as_tuples(bars: list[Bar]) -> list[tuple]:
    return [
        (int(b.open_time.timestamp()) * 1_000_000, b.open, b.high, b.low, b.close, b.volume, b.trade_count)
        for b in bars
    ]


prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000"), places=8)
sizes = st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=8)
trade_lists = st.lists(st.tuples(st.integers(0, 12 * STEP - 1), prices, sizes), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(trade_lists)
def test_bars_equal_pandas_reference(raw: list[tuple[int, Decimal, Decimal]]) -> None:
    trades = sorted((tr(BASE + t, p, s) for t, p, s in raw), key=lambda x: x.time_us)
    assert as_tuples(aggregate(SERIES, trades)) == reference(trades)


@settings(max_examples=100, deadline=None)
@given(trade_lists, st.randoms(use_true_random=False))
def test_order_within_a_bar_does_not_matter(raw: list[tuple[int, Decimal, Decimal]], rnd: random.Random) -> None:
    unique = {t: (p, s) for t, p, s in raw}  # distinct timestamps: the open/close are then unambiguous
    trades = sorted((tr(BASE + t, p, s) for t, (p, s) in unique.items()), key=lambda x: x.time_us)
    by_bar: dict[int, list[Trade]] = {}
    for x in trades:
        by_bar.setdefault(x.time_us // STEP, []).append(x)
    shuffled = []
    for k in sorted(by_bar):
        group = by_bar[k][:]
        rnd.shuffle(group)
        shuffled.extend(group)
    assert as_tuples(aggregate(SERIES, shuffled)) == reference(trades)


def test_bars_close_on_clock_after_grace_and_flat_bars_fill() -> None:
    agg = Aggregator(SERIES, grace_s=2)
    assert agg.add(tr(BASE + 10, "100", "1.5")) == []
    assert agg.advance(BASE + STEP + 1_999_999) == []  # within grace
    (u,) = agg.advance(BASE + STEP + 2_000_000)
    assert u.kind == "closed" and u.bar.close == Decimal("100") and u.bar.volume == Decimal("1.5")
    ups = agg.advance(BASE + 3 * STEP + 2_000_000)
    assert [(x.bar.open, x.bar.volume, x.bar.trade_count) for x in ups] == [(Decimal("100"), 0, 0)] * 2


def test_no_flat_bars_before_first_trade() -> None:
    agg = Aggregator(SERIES)
    assert agg.advance(BASE + 10 * STEP) == []
    agg.add(tr(BASE + 10 * STEP + 5, "7"))
    assert [u.bar.open_time.timestamp() for u in agg.advance(BASE + 12 * STEP)] == [(BASE + 10 * STEP) / 1e6]


def test_late_trade_amends_within_allowance_and_cascades_to_flat_bars() -> None:
    agg = Aggregator(SERIES, grace_s=0, late_allowance_s=3 * 300)
    agg.add(tr(BASE + 1, "100", tid="1"))
    ups = agg.advance(BASE + 3 * STEP)  # bar 0 closed, bars 1 and 2 flat at 100
    assert [u.bar.close for u in ups] == [Decimal(100)] * 3
    ups = agg.add(tr(BASE + STEP - 1, "90", "2", tid="2"))
    assert [(u.kind, u.bar.close) for u in ups] == [("amended", Decimal(90))] * 3
    assert ups[0].bar.volume == Decimal(3) and ups[0].bar.low == Decimal(90) and ups[0].bar.open == Decimal(100)
    assert agg.add(tr(BASE + STEP - 1, "90", "2", tid="2")) == []  # a replay changes nothing
    assert agg.stats.duplicates == 1
    # later bars take the new close when they close flat
    assert agg.advance(BASE + 4 * STEP)[0].bar.close == Decimal(90)
    # far too late: dropped and counted
    agg.advance(BASE + 20 * STEP)
    assert agg.add(tr(BASE + 2, "1", tid="3")) == []
    assert agg.stats.late_dropped == 1


def test_late_trade_into_a_flat_bar_replaces_it() -> None:
    agg = Aggregator(SERIES, grace_s=0, late_allowance_s=3600)
    agg.add(tr(BASE, "100"))
    agg.add(tr(BASE + 2 * STEP, "120"))  # bar 1 flat at 100
    (u,) = agg.add(tr(BASE + STEP + 5, "110", "0.5"))
    assert (u.kind, u.bar.open, u.bar.close, u.bar.volume, u.bar.trade_count) == (
        "amended",
        Decimal(110),
        Decimal(110),
        Decimal("0.5"),
        1,
    )


def test_duplicate_ids_in_open_bar_are_ignored() -> None:
    agg = Aggregator(SERIES)
    for _ in range(3):
        agg.add(tr(BASE + 5, "10", "1", tid="42"))
    (u,) = agg.advance(BASE + 2 * STEP)
    assert u.bar.volume == 1 and u.bar.trade_count == 1 and agg.stats.duplicates == 2


def test_interrupt_drops_partial_bar_and_resume_starts_at_next_boundary() -> None:
    agg = Aggregator(SERIES, grace_s=0)
    agg.add(tr(BASE + 1, "100"))
    assert len(agg.add(tr(BASE + STEP + 1, "101"))) == 1  # bar 0 closed
    agg.interrupt()
    assert agg.add(tr(BASE + STEP + 2, "102")) == [] and agg.stats.unobserved == 1
    agg.resume(BASE + 3 * STEP + 7, last_close=Decimal("105"))
    assert agg.cursor_us == BASE + 4 * STEP
    assert agg.add(tr(BASE + 3 * STEP + 9, "1")) == []  # in the partial interval: not ours to build
    ups = agg.advance(BASE + 6 * STEP)
    assert [(u.bar.open_time.timestamp(), u.bar.close) for u in ups] == [
        ((BASE + 4 * STEP) / 1e6, Decimal(105)),
        ((BASE + 5 * STEP) / 1e6, Decimal(105)),
    ]


def test_huge_jump_does_not_flood_flat_bars() -> None:
    agg = Aggregator(SERIES)
    agg.add(tr(BASE, "1"))
    ups = agg.add(tr(BASE + 10**6 * STEP, "2"))
    assert len(ups) == 1 and agg.stats.flat_skipped > 0
