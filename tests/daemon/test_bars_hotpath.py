"""The hot path's exact arithmetic against Decimal.

`Aggregator.add_text` keeps a bar's prices as text plus float and its sizes as text, building
Decimals only at close; `fields.hot_numbers` accepts a number text only when the exact converters
would. Both are checked here against the Decimal reference they replace: `_Acc.add` (the exact
per-trade Decimal aggregation, still used for late trades) and `price_text`/`size_text`. Bars are
compared in the text form the database stores, so a different exponent ("1.0" for "1.00") fails.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from daemon.bars import Aggregator, _Acc
from daemon.feeds.fields import (
    MAX_US,
    MIN_US,
    hot_numbers,
    hot_row_seconds,
    price_text,
    trade_size_text,
    us_from_seconds,
)
from db.records import SeriesKey, decimal_text

SERIES = SeriesKey("binance", "BTC-USDT", "5m")
STEP = 300_000_000
BASE = 1_608_000_000 * 1_000_000 - (1_608_000_000 * 1_000_000) % STEP


@st.composite
def decimal_texts(draw: st.DrawFn, *, zero: bool = False) -> str:
    """Plain decimal text as exchanges send it: varied scales, trailing and leading zeros, and
    long mantissas (beyond float's 15-17 digits, where distinct decimals share a float)."""
    scale = draw(st.integers(0, 12))
    digits = draw(st.sampled_from([3, 8, 15, 17, 22, 30]))
    mantissa = draw(st.integers(0 if zero else 1, 10**digits - 1))
    if not mantissa and not zero:
        mantissa = 1
    text = str(mantissa).rjust(scale + 1, "0")
    text = f"{text[:-scale]}.{text[-scale:]}" if scale else text
    pad = draw(st.integers(0, 3))  # the same value with more trailing zeros
    if pad:
        text = (text if "." in text else text + ".") + "0" * pad
    return text


def close_neighbours(base: str) -> list[str]:
    """Texts equal to or a unit of the last place away from `base`, in other spellings."""
    d = Decimal(base)
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int), base  # a finite decimal
    unit = Decimal(1).scaleb(exponent - 6)  # far below float resolution for most
    return [base, f"{base}0" if "." in base else f"{base}.0", format(d + unit, "f"), format(d - unit, "f")]


def bar_text(acc: _Acc) -> tuple[str, ...]:
    return (
        decimal_text(acc.open),
        decimal_text(acc.high),
        decimal_text(acc.low),
        decimal_text(acc.close),
        decimal_text(acc.volume),
        str(acc.count),
    )


def reference(trades: list[tuple[int, str, str]]) -> tuple[str, ...]:
    """One bar by `_Acc.add` with Decimals (the aggregation before the hot path)."""
    t0, p0, q0 = trades[0]
    acc = _Acc(BASE, Decimal(p0), (t0, Decimal(q0), None))
    for t, p, q in trades[1:]:
        acc.add(t, Decimal(p), Decimal(q), None)
    return bar_text(acc)


def hot(trades: list[tuple[int, str, str]]) -> tuple[str, ...]:
    agg = Aggregator(SERIES, grace_s=0)
    for t, p, q in trades:
        assert not agg.add_text(t, p, float(p), q, None)
    (update,) = agg.advance(BASE + STEP)
    b = update.bar
    return (
        decimal_text(b.open),
        decimal_text(b.high),
        decimal_text(b.low),
        decimal_text(b.close),
        decimal_text(b.volume),
        str(b.trade_count),
    )


@st.composite
def bars_of_trades(draw: st.DrawFn) -> list[tuple[int, str, str]]:
    """Trades of one bar whose prices cluster (ties of value, ties of float, equal texts)."""
    seeds = draw(st.lists(decimal_texts(), min_size=1, max_size=3))
    pool = [x for s in seeds for x in close_neighbours(s) if Decimal(x) > 0]
    n = draw(st.integers(1, 30))
    times = draw(st.lists(st.integers(0, STEP - 1), min_size=n, max_size=n))
    prices = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    sizes = draw(st.lists(decimal_texts(zero=True), min_size=n, max_size=n))
    return [(BASE + t, p, q) for t, p, q in zip(times, prices, sizes, strict=True)]


@settings(max_examples=400, deadline=None)
@given(bars_of_trades())
@example([(BASE, "1.00", "1"), (BASE + 1, "1.0", "2.50"), (BASE + 2, "1", "0.000")])  # equal values, other texts
@example([(BASE, "0.10000000000000000001", "1"), (BASE + 1, "0.1", "1"), (BASE + 2, "0.09999999999999999999", "1")])
def test_text_bar_equals_the_decimal_bar(trades: list[tuple[int, str, str]]) -> None:
    assert hot(trades) == reference(trades)


def test_decimal_rows_and_text_rows_mix_in_one_bar() -> None:
    """The full parser's Decimal rows (add_row) and the fast path's text rows meet in one bar."""
    trades = [(BASE, "100.10", "1.5"), (BASE + 5, "100.1", "0.25"), (BASE + 9, "100.100", "2"), (BASE + 7, "99.9", "1")]
    agg = Aggregator(SERIES, grace_s=0)
    for i, (t, p, q) in enumerate(trades):
        if i % 2:
            agg.add_row(t, Decimal(p), Decimal(q), None)
        else:
            agg.add_text(t, p, float(p), q, None)
    (update,) = agg.advance(BASE + STEP)
    assert (decimal_text(update.bar.high), decimal_text(update.bar.low)) == ("100.10", "99.9")
    assert decimal_text(update.bar.volume) == "4.75"
    assert reference(trades) == hot(trades)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(decimal_texts(zero=True), st.text(alphabet="0123456789.", max_size=45), st.text(max_size=12)),
    st.one_of(decimal_texts(zero=True), st.text(alphabet="0123456789.", max_size=45), st.text(max_size=12)),
)
@example("1e5", "1")
@example("1", " 1")
@example("1_0", "1")
@example("NaN", "1")
@example("١", "1")
@example("1", "-0")
@example("1", "0")
@example("1", "0.000")
@example("1", "00.")
@example("0.0000000000000000000000000000001", "1")
@example("1000000000000000", "1")
@example("1", "1000000000000000000")
def test_hot_numbers_accepts_only_what_the_exact_converters_accept(p: str, q: str) -> None:
    pf = hot_numbers(p, q)
    if pf is not None:
        exact_p, exact_q = price_text(p), trade_size_text(q)
        assert exact_p is not None and exact_q is not None
        assert exact_p == Decimal(p) and str(exact_p) == str(Decimal(p))  # same value and exponent
        assert pf == float(p)


@given(decimal_texts(), decimal_texts(zero=True))
def test_hot_numbers_takes_ordinary_exchange_numbers(p: str, q: str) -> None:
    """Every ordinary price and positive size within the float-proven bounds is taken (not handed
    over); a zero size never is (a trade of nothing is invalid, and the exact path counts it)."""
    if float(q) == 0:
        assert hot_numbers(p, q) is None and trade_size_text(q) is None
    elif 1e-29 < float(p) < 1e14 and len(p) <= 40 and len(q) <= 40 and 1e-29 < float(q) < 1e17:
        assert hot_numbers(p, q) == float(p)


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet="0123456789.+-_ e١", min_size=17, max_size=17)
    | st.from_regex(r"[0-9]{10}\.[0-9]{6}", fullmatch=True)
)
@example("1618678142.557535")
@example("0946684799.999999")  # just before 2000
@example("1618678142.55753_")
@example("1618678142.5575 5")
@example("161867814٢.557535")
def test_kraken_seconds_fast_form_is_exact(text: str) -> None:
    """`us_from_seconds` on 'SSSSSSSSSS.ffffff' (its digit-joining fast form) against Decimal."""
    got = us_from_seconds(text)
    if all(c in "0123456789" for c in text[:10] + text[11:]) and text[10] == ".":
        us = int(Decimal(text) * 1_000_000)
        assert got == (us if MIN_US <= us < MAX_US else None)
    else:
        assert got is None or got == int(Decimal(text) * 1_000_000)


_ROW_NUMBER = st.one_of(
    decimal_texts(zero=True),
    st.from_regex(r"[0-9]{1,22}\.[0-9]{1,21}", fullmatch=True),
    st.text(alphabet="0123456789.", max_size=45),
    st.sampled_from(["0.0", "00.000", "1e5", " 1.5", "1.5 ", "١.5", "1..5", ".5", "5.", "1_0.5"]),
)
_ROW_SECONDS = st.one_of(
    st.from_regex(r"[0-9]{10}\.[0-9]{6}", fullmatch=True),
    st.text(alphabet="0123456789.+-_ e١", min_size=15, max_size=19),
    st.sampled_from(["1618678142.557535", "1618678142.5", "1618678142", "0946684799.999999", "4102444800.000000"]),
)


@settings(max_examples=800, deadline=None)
@given(_ROW_NUMBER, _ROW_NUMBER, _ROW_SECONDS)
@example("354.11000000", "0.89594024", "1618678142.557535")  # a real Kraken v1 row
@example("354.11", "0.000", "1618678142.557535")  # a zero size
@example("100000000000000.0", "1.0", "1618678142.557535")  # a price at the float bound
@example("1.5", "12345678901234567.0", "1618678142.557535")  # a size too long for the short form
@example("1.5", "1.5", "0946684799.999999")  # before 2000
@example("1.5", "1.5", "1618678142.5")  # a plain time in another form
def test_hot_row_seconds_is_hot_numbers_and_us_from_seconds(p: str, q: str, ts: str) -> None:
    """Kraken v1's one-regex row check answers exactly what the two converters answer."""
    pf, t = hot_numbers(p, q), us_from_seconds(ts)
    assert hot_row_seconds(p, q, ts) == (None if pf is None or t is None else (pf, t))
