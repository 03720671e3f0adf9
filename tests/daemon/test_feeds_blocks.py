"""The block path (`FeedSession.messages`: frames queued together, runs of trades as columns)
against frame by frame (`FeedSession.message`).

The same frames, cut into random batches, must give the same actions in the same order (bars
text for text, rejections, backfills), the same counters and the same bars in progress - on
clean dense streams of every exchange, feed clock and wall clock, one symbol and two, and on
streams laced with what breaks a block: duplicates, equal prices spelled differently, late and
future trades, unknown symbols, heartbeats and hostile frames (framefuzz.py). And the parts: the
columns `scan_block` makes are each frame's `fast_scan` rows; `hot_columns` accepts only what
`hot_numbers` accepts, with keys that order prices as their values; `Aggregator.add_block`
leaves the state `add_text` one by one leaves.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import replace
from decimal import Decimal
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.bars import Aggregator
from daemon.feeds import PROTOCOLS
from daemon.feeds.base import ExchangeProtocol, SimState, Trade, exact_rows
from daemon.feeds.capture import read_capture
from daemon.feeds.fields import hot_columns, hot_numbers
from daemon.feeds.session import Backfill, FeedSession, Publish, Rejected, SessionOptions
from daemon.feeds.simulator import synth_trades
from db.records import Bar, SeriesKey
from tests.conftest import REPO
from tests.daemon.framefuzz import CAPTURES, Mutator, seed_bars
from tests.daemon.test_bars_golden import bar_line

BATCHES = (1, 2, 3, 7, 16, 40, 64, 200)


@pytest.fixture(scope="module")
def bars(shared_dir: Path) -> list[Bar]:
    return seed_bars(shared_dir)[:40]


def trades(exchange: str, symbol: str, bars: list[Bar], per_bar: int = 50, first_id: int = 1) -> list[Trade]:
    proto = PROTOCOLS[exchange]
    return list(synth_trades(exchange, symbol, proto.native_symbol(symbol), bars, per_bar=per_bar, first_id=first_id))


def render(proto: ExchangeProtocol, ts: list[Trade]) -> list[str]:
    return [proto.render_trade(t, SimState(now_us=t.time_us)) for t in ts]


def receipts(frames: list[str], proto: ExchangeProtocol, seed: int) -> list[float]:
    """Wall-clock receipt times: each frame's trade time (or the last one) plus 0-3 s, in order."""
    rng = random.Random(seed)
    out: list[float] = []
    last = 0.0
    for f in frames:
        rows = proto.scan_safe(f)[1]
        t = rows[0][2] / 1e6 if rows else last
        last = max(last, t + rng.uniform(0, 3.0))
        out.append(last)
    return out


def drive(
    proto: ExchangeProtocol,
    series: list[SeriesKey],
    frames: list[str],
    received: list[float],
    wall: bool,
    seed: int | None,
    batches: tuple[int, ...] = BATCHES,
) -> tuple[list[Any], FeedSession]:
    """Frames through a live session, one by one (`seed` None) or in seeded random batches;
    backfills find nothing. Returns every action, as comparable tuples, and the session."""
    s = FeedSession(proto, series, SessionOptions(backfill_days=0.0), wall_clock=wall)
    log: list[Any] = []

    def run(actions: list[Any]) -> None:
        while actions:
            more = []
            for a in actions:
                if isinstance(a, Backfill):
                    log.append(("backfill", a.index, a.start_us, a.end_us, a.final, a.open_ended))
                    more.extend(s.backfilled(a, a.end_us, [], last=True))
                elif isinstance(a, Publish):
                    log.extend((u.kind, bar_line(u.bar)) for u in a.updates)
                elif isinstance(a, Rejected):
                    log.append(("rejected", a.kind, a.reason, a.count))
                else:
                    log.append(("reconnect", a.reason))
            actions = more

    run(s.up(received[0], 0.0))
    run(s.tick(received[0] if wall else None, 11.0))  # no acknowledgement: live after the timeout
    rng = random.Random(seed)
    i = 0
    while i < len(frames):
        if seed is None:
            run(s.message(frames[i], received[i], 11.0))
            i += 1
            continue
        n = rng.choice(batches)
        acts, taken = s.messages(frames[i : i + n], received[i : i + n], 11.0)
        assert 1 <= taken <= min(n, len(frames) - i)
        run(acts)
        i += taken
    run(s.tick(received[-1] + 3600 if wall else None, 12.0))
    return log, s


def assert_same(
    proto: ExchangeProtocol, series: list[SeriesKey], frames: list[str], wall: bool, seed: int
) -> FeedSession:
    received = receipts(frames, proto, seed) if wall else [0.0] * len(frames)
    one_by_one, a = drive(proto, series, frames, received, wall, None)
    batched, b = drive(proto, series, frames, received, wall, seed)
    assert a.stats.block_trades == 0
    assert batched == one_by_one
    assert sum(1 for x in batched if x[0] == "closed") > 10
    assert {**b.stats.as_dict(), "block_trades": 0} == a.stats.as_dict()
    for sa, sb in zip(a.series, b.series, strict=True):
        assert sb.agg.stats == sa.agg.stats
        assert sb.agg.current_bar() == sa.agg.current_bar()
    return b


@pytest.mark.parametrize("wall", [False, True], ids=["feed-clock", "wall-clock"])
@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_clean_dense_stream_goes_as_blocks_and_stores_the_same(bars: list[Bar], exchange: str, wall: bool) -> None:
    proto = PROTOCOLS[exchange]
    frames = render(proto, trades(exchange, "BTC-USDT", bars))
    b = assert_same(proto, [SeriesKey(exchange, "BTC-USDT", "5m")], frames, wall, seed=1)
    assert b.stats.block_trades > 0.7 * b.stats.trades, b.stats


#: Exchanges whose frames carry several trades on busy markets.
SEVERAL = ("kraken", "poloniex")


def bundle(frames: list[str], seed: int, most: int = 6) -> list[str]:
    """Consecutive trade frames merged into frames of 1 to `most` trades, as busy markets send
    them (Kraken v2 and Poloniex `data` lists, Kraken v1 row arrays)."""
    rng = random.Random(seed)
    out: list[str] = []
    i = 0
    while i < len(frames):
        docs = [orjson.loads(f) for f in frames[i : i + rng.randint(1, most)]]
        first = docs[0]
        if type(first) is list:  # Kraken v1: [channel, rows, "trade", pair]
            first[1] = [r for d in docs for r in d[1]]
        else:
            first["data"] = [r for d in docs for r in d["data"]]
        out.append(orjson.dumps(first).decode())
        i += len(docs)
    return out


def kraken_v1(ts: list[Trade]) -> list[str]:
    """Kraken v1 trade arrays of these trades (the v1 shape of the real capture)."""
    return [
        orjson.dumps(
            [
                119930881,
                [[str(t.price), str(t.size), f"{t.time_us // 10**6}.{t.time_us % 10**6:06d}", str(t.side)[0], "l", ""]],
                "trade",
                t.native_symbol,
            ]
        ).decode()
        for t in ts
    ]


@pytest.mark.parametrize("wall", [False, True], ids=["feed-clock", "wall-clock"])
@pytest.mark.parametrize("exchange", ["kraken", "kraken-v1", "poloniex"])
def test_frames_of_several_trades_go_as_blocks_and_store_the_same(bars: list[Bar], exchange: str, wall: bool) -> None:
    """Busy markets: frames of 1-6 trades. Whole frames go in as blocks; the frame a stretch ends
    in (a bar's close, a late trade, a duplicate id inside it) goes through `message`."""
    name = exchange.removesuffix("-v1")
    proto = PROTOCOLS[name]
    ts = trades(name, "BTC-USDT", bars)
    frames = bundle(kraken_v1(ts) if exchange == "kraken-v1" else render(proto, ts), seed=12)
    assert max(len(proto.fast_scan(f)[1]) for f in frames) == 6  # type: ignore[index]
    b = assert_same(proto, [SeriesKey(name, "BTC-USDT", "5m")], frames, wall, seed=13)
    assert b.stats.block_trades > 0.7 * b.stats.trades, b.stats


@pytest.mark.parametrize("wall", [False, True], ids=["feed-clock", "wall-clock"])
@pytest.mark.parametrize("exchange", SEVERAL)
def test_laced_frames_of_several_trades_give_the_same_actions(bars: list[Bar], exchange: str, wall: bool) -> None:
    """The laced stream (duplicates, equal prices spelled differently, late, future and
    unknown-symbol trades, heartbeats, hostile frames) with runs of trade frames merged: the
    odd trades now sit inside frames of several."""
    proto = PROTOCOLS[exchange]
    frames: list[str] = []
    run: list[str] = []
    for f in laced(exchange, bars, seed=14):
        if proto.scan_full(f)[0].kind == "trade":
            run.append(f)
            continue
        frames.extend([*bundle(run, seed=len(frames)), f])
        run = []
    frames.extend(bundle(run, seed=0))
    b = assert_same(proto, [SeriesKey(exchange, "BTC-USDT", "5m")], frames, wall, seed=15)
    # fewer blocks than one trade a frame: a batch holds more trades, so more of them hold an
    # out-of-order trade, which sends the batch frame by frame
    assert b.stats.block_trades > 0.03 * b.stats.trades, b.stats
    assert b.stats.unknown_symbol and sum(b.stats.malformed.values()), b.stats
    assert b.stats.future_trades or not wall, b.stats  # the feed clock has no future


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_two_symbols_interleaved(bars: list[Bar], exchange: str) -> None:
    proto = PROTOCOLS[exchange]
    both = trades(exchange, "BTC-USDT", bars) + trades(exchange, "ETH-USDT", bars[5:], per_bar=20, first_id=10**6)
    both.sort(key=lambda t: t.time_us)  # stable: interleaved in time order
    series = [SeriesKey(exchange, "BTC-USDT", "5m"), SeriesKey(exchange, "ETH-USDT", "5m")]
    b = assert_same(proto, series, render(proto, both), wall=False, seed=2)
    assert b.stats.block_trades > 0.3 * b.stats.trades, b.stats


def laced(exchange: str, bars: list[Bar], seed: int) -> list[str]:
    """A dense stream with, every few frames, one of the things that stop a block."""
    proto = PROTOCOLS[exchange]
    rng = random.Random(seed)
    clean = trades(exchange, "BTC-USDT", bars)
    hostile = Mutator(exchange, render(proto, clean[:300]), seed=seed).frames(10**6)
    natives = [proto.native_symbol("BTC-USDT")]
    out: list[str] = []
    for i, t in enumerate(clean):
        out.append(proto.render_trade(t, SimState(now_us=t.time_us)))
        if rng.random() > 0.02:
            continue
        price = str(t.price)

        def again(t: Trade = t, i: int = i, **change: Any) -> str:
            """The trade once more, changed, with a new id."""
            return proto.render_trade(replace(t, trade_id=str(10**7 + i), **change), SimState(now_us=t.time_us))

        odd = {
            "duplicate": [out[-1]],
            "same price, other text": [again(price=Decimal(price + ("0" if "." in price else ".0")))],
            "late in the bar": [again(time_us=t.time_us - 7_000_000)],
            "previous bar": [again(time_us=t.time_us - 300_000_000)],
            "future": [again(time_us=t.time_us + 600_000_000)],
            "unknown symbol": [again(native_symbol=proto.native_symbol("ETH-USDT"))],
            "heartbeat": proto.render_server_heartbeat(natives, SimState(now_us=t.time_us)),
            "hostile": [next(hostile).text],
        }
        out.extend(odd[rng.choice(sorted(odd))])
    return out


@pytest.mark.parametrize("wall", [False, True], ids=["feed-clock", "wall-clock"])
@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_laced_stream_gives_the_same_actions(bars: list[Bar], exchange: str, wall: bool) -> None:
    proto = PROTOCOLS[exchange]
    b = assert_same(proto, [SeriesKey(exchange, "BTC-USDT", "5m")], laced(exchange, bars, seed=3), wall, seed=4)
    assert b.stats.block_trades > 0.2 * b.stats.trades, b.stats
    assert sum(b.stats.malformed.values()) > 0


def test_a_backfill_asked_by_the_last_frame_of_a_run_stops_the_batch(bars: list[Bar]) -> None:
    """Trades and timed heartbeats alternate (Coinbase), so each trade is a run of its own; the
    wall clock makes the partial first interval's backfill due at some trade. The batch must stop
    right after that frame, as frame by frame does (before: the next run went on, and the backfill
    was asked for again)."""
    proto = PROTOCOLS["coinbase"]
    frames: list[str] = []
    for t in trades("coinbase", "BTC-USDT", bars[:6], per_bar=20):
        frames.append(proto.render_trade(t, SimState(now_us=t.time_us)))
        frames.extend(proto.render_server_heartbeat(["BTC-USDT"], SimState(now_us=t.time_us + 500_000)))
    assert '"heartbeat"' in frames[1] and '"time"' in frames[1]
    received = receipts(frames, proto, seed=10)
    series = [SeriesKey("coinbase", "BTC-USDT", "5m")]
    one_by_one, _ = drive(proto, series, frames, received, True, None)
    batched, _ = drive(proto, series, frames, received, True, seed=11, batches=(50, 200))
    assert batched == one_by_one
    assert sum(1 for x in one_by_one if x[0] == "backfill" and x[4]) >= 1  # the partial interval's


@pytest.mark.parametrize("wall", [False, True], ids=["feed-clock", "wall-clock"])
@pytest.mark.parametrize("exchange", sorted(CAPTURES))
def test_real_captures_in_batches_give_the_same_actions(shared_dir: Path, exchange: str, wall: bool) -> None:
    """Real mixed traffic (book updates, tickers, heartbeats, acknowledgements and trades): the
    runs with nothing to decide are counted at once, everything else as frame by frame."""
    proto = PROTOCOLS[exchange]
    frames = [r.raw for r in read_capture(shared_dir / "captures" / CAPTURES[exchange])]
    symbols = sorted({t.symbol for f in frames for t in proto.parse(f).trades})
    series = [SeriesKey(exchange, s, "1m") for s in symbols]
    received = receipts(frames, proto, seed=8) if wall else [0.0] * len(frames)
    one_by_one, a = drive(proto, series, frames, received, wall, None)
    batched, b = drive(proto, series, frames, received, wall, seed=9)
    assert batched == one_by_one
    assert b.stats.as_dict() == a.stats.as_dict() and a.stats.trades > 0
    for sa, sb in zip(a.series, b.series, strict=True):
        assert sb.agg.stats == sa.agg.stats and sb.agg.current_bar() == sa.agg.current_bar()
    # what a disconnect reads (bars that ended before the last frame close)
    assert (b._last_frame, b.last_message_mono) == (a._last_frame, a.last_message_mono) == (received[-1], 11.0)


# --- the parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_heartbeats_recognised_unparsed_are_what_the_parser_calls_heartbeats(exchange: str) -> None:
    """A batch takes `heartbeat_frames` without parsing them: each must be a heartbeat to the
    full parser, and the simulator's heartbeats (what the exchange sends) are among them where
    the protocol lists any."""
    proto = PROTOCOLS[exchange]
    for text in proto.heartbeat_frames:
        assert proto.scan_full(text)[0].kind == "heartbeat", text
    sent = proto.render_server_heartbeat([proto.native_symbol("BTC-USDT")], SimState(now_us=1_618_678_142_000_000))
    if proto.heartbeat_frames:
        assert set(sent) <= set(proto.heartbeat_frames), sent


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_block_columns_are_each_frames_fast_scan_rows(bars: list[Bar], exchange: str) -> None:
    """Blocks of trade frames (of one trade, or several where the exchange sends that) and their
    mutations: whenever `scan_block` answers, every frame is a trade frame `fast_scan` settles,
    the columns are their rows one after the other, and `starts` says where each frame's begin."""
    proto = PROTOCOLS[exchange]
    frames = render(proto, trades(exchange, "BTC-USDT", bars[:10]))
    if exchange in SEVERAL:  # as many frames, of 1-3 trades
        frames = bundle(render(proto, trades(exchange, "BTC-USDT", bars[:20])), seed=4, most=3)
    mutated = [f.text for f in Mutator(exchange, frames, seed=5).frames(3000)]
    rng = random.Random(6)
    answered = refused = several = 0
    for start in range(0, len(frames) - 8, 4):
        block = frames[start : start + rng.choice((2, 5, 8))]
        if rng.random() < 0.5:  # one frame of the block mutated
            block = list(block)
            block[rng.randrange(len(block))] = mutated[start % len(mutated)]
        got = proto.scan_block(block)
        if got is None:
            refused += 1
            continue
        answered += 1
        rows = []
        counts = []
        for text in block:
            hit = proto.fast_scan(text)
            assert hit is not None and hit[0].kind == "trade" and hit[1], text
            rows.extend(hit[1])
            counts.append(len(hit[1]))
        several += max(counts) > 1
        assert got.starts == (None if max(counts) == 1 else list(accumulate(counts, initial=0)))
        assert got.natives == [r[0] for r in rows]
        assert (got.ids if got.ids is not None else [None] * len(rows)) == [r[1] for r in rows]
        assert [got.clock.us(t) for t in got.times] == [r[2] for r in rows]
        assert got.prices == [r[3] for r in rows] and got.sizes == [r[5] for r in rows]
        assert exact_rows(rows) == [r for text in block for r in proto.scan_full(text)[1]]
    assert answered > 50 and refused > 20, (answered, refused)
    if exchange in SEVERAL:
        assert several > 20, several


_DIGITS = st.text("0123456789", min_size=1, max_size=8)
_NUMBER = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _DIGITS, _DIGITS),
    _DIGITS,
    st.sampled_from(["0", "0.0", ".", "", "1.2.3", "1e5", "-1", " 1", "١", "1.", ".5", "00.10", "9" * 20, "0.000"]),
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("99999"), places=8).map(str),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NUMBER, _NUMBER), min_size=1, max_size=12))
def test_hot_columns_accepts_only_what_hot_numbers_accepts(pairs: list[tuple[str, str]]) -> None:
    ps = [p for p, _ in pairs]
    qs = [q for _, q in pairs]
    keys = hot_columns(ps, qs)
    if keys is None:
        return
    assert all(hot_numbers(p, q) is not None for p, q in pairs)
    values = [Decimal(p) for p in ps]
    for i in range(len(ps)):
        for j in range(len(ps)):
            if keys[i] < keys[j]:
                assert values[i] < values[j]
            elif keys[i] == keys[j] and ps[i] != ps[j]:
                # text keys: equal keys are equal values ("100.5" and "100.50" padded alike);
                # equal floats may be different values
                assert type(keys[i]) is float or values[i] == values[j]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda d: st.lists(
            st.tuples(
                st.integers(10 ** (d - 1) if d > 1 else 0, 10**d - 1), st.text("0123456789", min_size=1, max_size=8)
            ),
            min_size=2, max_size=12,
        )
    )
)
def test_prices_with_trailing_zeros_order_as_padded_texts(parts: list[tuple[int, str]]) -> None:
    """Prices as exchanges that strip trailing zeros send them ("19720.5", "19695.87"): one
    number of integer digits, a point, fraction digits of any length - text keys, no floats."""
    ps = [f"{whole}.{fraction}" for whole, fraction in parts]
    keys = hot_columns(ps, ["1"] * len(ps))
    if keys is None:  # only the float bounds refuse these
        assert min(Decimal(p) for p in ps) <= Decimal("1e-29")
        return
    assert all(type(k) is str for k in keys), keys
    values = [Decimal(p) for p in ps]
    assert sorted(range(len(ps)), key=keys.__getitem__) == sorted(range(len(ps)), key=values.__getitem__)
    assert all((keys[i] == keys[j]) == (values[i] == values[j]) for i in range(len(ps)) for j in range(len(ps)))


_PRICE = st.sampled_from(
    ["100", "100.0", "100.00", "100.5", "100.50", "99.99", "101", "100.000000000000000001", "99.9999999999999999"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_PRICE, st.integers(0, 290)), min_size=2, max_size=30),
    st.lists(st.integers(1, 6), min_size=1, max_size=10),
)
def test_add_block_leaves_what_add_text_one_by_one_leaves(trades_: list[tuple[str, int]], cuts: list[int]) -> None:
    """Trades of one bar: the first through `add_text` (it opens the bar), the rest in runs
    through `add_block` (sorted by time, as blocks are), or all one by one: same bar."""
    base = 1_600_000_200_000_000 - 1_600_000_200_000_000 % 300_000_000
    rows = sorted(((base + s * 1_000_000, p, str(i + 1)) for i, (p, s) in enumerate(trades_)), key=lambda r: r[0])
    key = SeriesKey("x", "BTC-USDT", "5m")
    one, blocks = Aggregator(key), Aggregator(key)
    for t, p, tid in rows:
        one.add_text(t, p, float(p), "1.5", tid)
    t, p, tid = rows[0]
    blocks.add_text(t, p, float(p), "1.5", tid)
    i = 1
    cut = iter(cuts * 30)
    while i < len(rows):
        run = rows[i : i + next(cut)]
        ps = [r[1] for r in run]
        qs = ["1.5"] * len(run)
        keys = hot_columns(ps, qs)  # the texts where they order as values, else floats
        ids = blocks.fits_block(run[0][0], run[-1][0], [r[2] for r in run])
        assert keys is not None and ids is not None
        blocks.add_block(run[0][0], run[-1][0], ps, keys, qs, ids)
        i += len(run)
    assert blocks.current_bar() == one.current_bar()
    assert blocks.stats == one.stats
    assert blocks.fits_block(rows[0][0], rows[0][0], [rows[0][2]]) is None  # a duplicate id


def test_a_block_takes_frames_within_the_limit_and_refuses_one_beyond_it(bars: list[Bar]) -> None:
    """The frame limit is per frame: a batch larger than it in all still scans; a frame over it
    (or a binary frame) makes `scan_block` refuse, as `scan_hot` hands such frames to `scan`."""
    proto = PROTOCOLS["binance"]
    frames = render(proto, trades("binance", "BTC-USDT", bars[:2]))
    limit = max(map(len, frames))
    small = type(proto)()
    small.max_frame_bytes = limit
    assert len("".join(frames)) > limit and small.scan_block(frames) is not None
    small.max_frame_bytes = limit - 1
    assert small.scan_block(frames) is None
    assert proto.scan_block([*frames[:3], frames[3].encode()]) is None


def test_the_block_path_is_exercised_by_the_bench_stream(bars: list[Bar]) -> None:
    """The stream `bench/ingest_rate.py` measures (200 trades per bar) goes almost all as blocks."""
    proto = PROTOCOLS["binance"]
    frames = render(proto, trades("binance", "BTC-USDT", bars[:12], per_bar=200))
    series = [SeriesKey("binance", "BTC-USDT", "5m")]
    _log, s = drive(proto, series, frames, [0.0] * len(frames), False, seed=7, batches=(256,))
    assert s.stats.block_trades > 0.9 * s.stats.trades


@pytest.mark.parametrize("exchange", sorted(CAPTURES))
def test_the_bench_times_capture_trades_going_into_bars(shared_dir: Path, exchange: str) -> None:
    """`bench/ingest_rate.py` times each capture through a session live before its first trade,
    as a daemon connected for a while is: every trade lands in a bar. (Made live by the stream's
    own first trade, a session starts at the next boundary and drops the trades of the first
    bar as the partial interval REST fills; the captures are each shorter than a bar, so the
    bench timed that drop path for all of them.)"""
    spec = importlib.util.spec_from_file_location("ingest_rate", REPO / "bench" / "ingest_rate.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    proto = PROTOCOLS[exchange]
    frames = [r.raw for r in read_capture(shared_dir / "captures" / CAPTURES[exchange])]
    sent = [t for f in frames for t in proto.parse(f).trades]
    session = bench.live_session(exchange, sorted({t.symbol for t in sent}), frames)
    before = session.stats.trades
    acts, taken = session.messages(frames, [0.0] * len(frames), 11.0)
    assert taken == len(frames), acts[-1:]  # no backfill was asked for midway
    assert session.stats.trades - before == len(sent) > 0
    assert bench.landed(session) == len(sent)
