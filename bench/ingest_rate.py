"""Ingest rate on one core, side by side in one run, per exchange:

- **ingest**: the daemon's real path - `FeedSession.messages` over batches of `--batch` frames, as
  the ingest shell hands over what its queue holds (under load: many frames; runs of trade frames
  are decoded and checked as columns and go into the aggregators as blocks, exact decimals, bars
  closed and handed out as actions);
- **one by one**: `FeedSession.message` per frame (what a batch of one takes; printed for
  reference, not a target);
- **bare orjson**: `orjson.loads` of each message and nothing else (the floor);
- **cryptofeed-style**: `json.loads(parse_float=Decimal)` plus one trade object per trade (what a
  user would write with that library's approach; no aggregation, so it is the easier baseline).

Times are CPU time of this process (`time.process_time`), best of `--repeat`, so other load on a
shared machine does not count against one side more than the other. A stream shorter than
`MIN_TIMED` messages (the Kraken capture is 49) is timed over enough passes to reach it, each
ingest pass with a fresh session, so no timing is a few tens of microseconds from a cold cache.
Each session is live before the stream's first trade (`live_session`), as a daemon connected for
a while is, so every trade goes into a bar; the run checks that it did.
`--breakdown` adds where an ingested message's time goes: parse alone (`scan_hot`: decode,
checked number texts, rows) and the rest (session, aggregation, bar records), in ns per message.

Streams: trades-only synthetic messages (the simulator's rendering of real 5m bars from
../shared/data, every exchange) and the real captures in ../shared/captures (mixed traffic).
The synthetic streams use a realistic density, `--per-bar` trades per bar (default 200; real
BTCUSDT has hundreds to thousands of trades per 5m bar), so a bar closes every ~200 trades. The
simulator's sparse rendering (4 trades per bar: a bar closes every 4th trade, the worst case for
bar building) is printed once more per exchange, marked "sparse, not a target". Kraken and
Poloniex put several trades in one frame on busy markets: their dense stream is printed once more
with 1-6 trades a frame ("busy", not a target: the cryptofeed-style parser's per-frame cost is
shared by several trades there, so the ratio per frame is not the one the targets speak of).
Prints msgs/s and the ratios ingest/orjson (target >= 0.3) and ingest/cryptofeed (target >= 3),
then the same two ratios one frame at a time.

Build: the installed service runs the hot path compiled by mypyc (`pip install .`, setup.py);
a checkout or editable install runs it as pure Python. `--build compiled` (the default) times
the compiled build: it compiles a copy of the tree once per source change (`bench/hotpath.py`,
under build/hot-path/, ~20 s) and runs this script from there; `--build pure` times the sources
as they are. The first line says which build was timed.

Batch size: the shell drains its queue into one `messages` call (up to 1024 frames). A feed that
keeps up has short batches, and speed does not matter there; a feed under load has a backlog,
so batches grow with the load (the slower the consumer, the more each batch holds).

    python bench/ingest_rate.py [--bars 5000] [--per-bar 200] [--batch 256] [--repeat 5] [--breakdown]
                                [--exchange NAME ...] [--build compiled|pure]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.compiled import hot_path_build  # noqa: E402
from daemon.feeds import PROTOCOLS  # noqa: E402
from daemon.feeds.base import ExchangeProtocol, SimState, Trade  # noqa: E402
from daemon.feeds.capture import read_capture  # noqa: E402
from daemon.feeds.fields import US_PER_S  # noqa: E402
from daemon.feeds.session import Backfill, FeedSession, Publish, SessionOptions, State  # noqa: E402
from daemon.feeds.simulator import SPARSE, synth_trades  # noqa: E402
from db.csvbars import read_bars_csv  # noqa: E402
from db.records import SeriesKey  # noqa: E402

SHARED = Path(os.environ.get("BARCAST_SHARED_DIR", ROOT.parent / "shared"))
#: Fewest messages one timing covers (short streams are passed through that many times).
MIN_TIMED = 20_000
CAPTURES = {
    "coinbase": "COINBASE.ws.28.0",
    "binance": "BINANCE.ws.1.0",
    "kraken": "KRAKEN.ws.48.0",
    "poloniex": "POLONIEX.ws.1.0",
}


class CfTrade:
    """One object per trade, as cryptofeed's parsers make (a plain slotted class here)."""

    __slots__ = ("amount", "exchange", "id", "price", "side", "symbol", "timestamp")

    def __init__(
        self, exchange: str, symbol: str, side: str, amount: Decimal, price: Decimal, timestamp: float, id: Any
    ) -> None:
        self.exchange, self.symbol, self.side, self.amount = exchange, symbol, side, amount
        self.price, self.timestamp, self.id = price, timestamp, id


def _iso_ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def cryptofeed_style(exchange: str) -> Callable[[str], object]:
    """json.loads(parse_float=Decimal) and a trade object per trade, per exchange dialect."""
    loads = json.loads

    def coinbase(m: str) -> object:
        msg = loads(m, parse_float=Decimal)
        if msg.get("type") in ("match", "last_match"):
            return CfTrade(
                "coinbase",
                msg["product_id"],
                "sell" if msg["side"] == "buy" else "buy",
                Decimal(msg["size"]),
                Decimal(msg["price"]),
                _iso_ts(msg["time"]),
                msg["trade_id"],
            )
        return msg

    def binance(m: str) -> object:
        msg = loads(m, parse_float=Decimal)
        msg = msg.get("data", msg)
        if msg.get("e") in ("trade", "aggTrade"):
            return CfTrade(
                "binance",
                msg["s"],
                "sell" if msg["m"] else "buy",
                Decimal(msg["q"]),
                Decimal(msg["p"]),
                msg["T"] / 1000.0,
                msg.get("t", msg.get("a")),
            )
        return msg

    def kraken(m: str) -> object:
        msg = loads(m, parse_float=Decimal)
        if isinstance(msg, list) and len(msg) >= 4 and msg[-2] == "trade":
            return [CfTrade("kraken", msg[-1], r[3], Decimal(r[1]), Decimal(r[0]), float(r[2]), None) for r in msg[1]]
        if isinstance(msg, dict) and msg.get("channel") == "trade":
            return [
                CfTrade(
                    "kraken",
                    d["symbol"],
                    d["side"],
                    Decimal(d["qty"]),
                    Decimal(d["price"]),
                    _iso_ts(d["timestamp"]),
                    d.get("trade_id"),
                )
                for d in msg["data"]
            ]
        return msg

    def bitstamp(m: str) -> object:
        msg = loads(m, parse_float=Decimal)
        if msg.get("event") == "trade":
            d = msg["data"]
            return CfTrade(
                "bitstamp",
                msg["channel"][12:],
                "buy" if d["type"] == 0 else "sell",
                Decimal(d["amount_str"]),
                Decimal(d["price_str"]),
                int(d["microtimestamp"]) / 1e6,
                d["id"],
            )
        return msg

    def poloniex(m: str) -> object:
        msg = loads(m, parse_float=Decimal)
        if msg.get("channel") == "trades" and "data" in msg:
            return [
                CfTrade(
                    "poloniex",
                    d["symbol"],
                    d["takerSide"],
                    Decimal(d["quantity"]),
                    Decimal(d["price"]),
                    d["createTime"] / 1000.0,
                    d["id"],
                )
                for d in msg["data"]
            ]
        return msg

    return {"coinbase": coinbase, "binance": binance, "kraken": kraken, "bitstamp": bitstamp, "poloniex": poloniex}[
        exchange
    ]


def busy(proto: ExchangeProtocol, trades: list[Trade], seed: int = 1) -> list[str]:
    """The trades in frames of 1-6 (`render_trades`), as busy markets send them."""
    rng = random.Random(seed)
    out: list[str] = []
    i = 0
    while i < len(trades):
        k = rng.randint(1, 6)
        out.append(proto.render_trades(trades[i : i + k], SimState(now_us=trades[i].time_us)))
        i += k
    return out


#: A symbol no stream here trades: its frames bring the session's clock up to the stream.
PRIME = "ZZZ-USDT"
#: Trades of `PRIME` a session is given before the stream (counted in its trades too).
PRIMED = 2


def live_session(exchange: str, symbols: list[str], messages: list[str]) -> FeedSession:
    """A session (feed clock) subscribed to `symbols`, live before the stream's first trade, as a
    daemon connected for a while is: its aggregators start at the boundary of the first trade's
    bar and no backfill is due, so every trade of the stream lands in a bar in progress (or
    opens one). A session made live by the stream's own first trade would start at the *next*
    boundary and drop the first bar's trades as the partial interval it fetches from REST, which
    a daemon does only in its first bar after connecting. Two frames of `PRIME` (a symbol of
    its own, so the stream's bars are untouched) bring it there: one just before that boundary
    (live from it), one at the boundary + grace (the partial interval before it is over and
    fetched: nothing here)."""
    proto = PROTOCOLS[exchange]
    keys = [SeriesKey(exchange, s, "5m") for s in [*symbols, PRIME]]
    options = SessionOptions(backfill_days=0.0)
    session = FeedSession(proto, keys, options, wall_clock=False)
    first = min(t.time_us for m in messages for t in proto.parse(m).trades)
    boundary = first - first % (300 * US_PER_S)
    native = proto.native_symbol(PRIME)
    prime = [
        proto.render_trade(Trade(exchange, PRIME, native, str(k), at, Decimal(1), Decimal(1), "buy"), SimState(at))
        for k, at in enumerate((boundary - 1, boundary + int(options.grace_s * US_PER_S)))
    ]
    session.up(0.0, 0.0)
    answer(session, session.tick(None, 11.0))  # acknowledgement timeout: subscribed, live from the feed's time
    for m in prime:
        answer(session, session.message(m, 0.0, 11.0))
    assert len(prime) == PRIMED
    live = [s.agg.cursor_us for s in session.series]
    assert session.state is State.LIVE and live == [boundary] * len(keys), (session.state, live, boundary)
    return session


def landed(session: FeedSession) -> int:
    """Trades of the stream (not `PRIME`'s) that went into bars, in progress or closed."""
    return sum(s.agg.stats.trades - s.agg.stats.late_dropped for s in session.series if s.key.symbol != PRIME)


def answer(session: FeedSession, actions: list[Any]) -> int:
    """Do what the ingest shell does with the actions, minus the I/O: backfills find nothing
    (the stream is complete), bars are counted instead of stored. Returns bars published."""
    n = 0
    while actions:
        more: list[Any] = []
        for a in actions:
            if isinstance(a, Backfill):
                more.extend(session.backfilled(a, a.end_us, [], last=True))
            elif isinstance(a, Publish):
                n += len(a.updates)
        actions = more
    return n


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run(
    name: str,
    exchange: str,
    messages: list[str],
    repeat: int,
    batch: int,
    breakdown: bool = False,
    target: bool = True,
) -> tuple[float, float]:
    cf = cryptofeed_style(exchange)
    passes = max(1, -(-MIN_TIMED // len(messages)))

    def bare() -> None:
        loads = orjson.loads
        for _ in range(passes):
            for m in messages:
                loads(m)

    def baseline() -> None:
        for _ in range(passes):
            for m in messages:
                cf(m)

    proto = PROTOCOLS[exchange]
    symbols = sorted({t.symbol for m in messages for t in proto.parse(m).trades})
    sessions = [live_session(exchange, symbols, messages) for _ in range(2 * repeat * passes)]
    batches = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    stamps = [[0.0] * len(b) for b in batches]

    def one_by_one() -> None:
        for _ in range(passes):
            session = sessions.pop()
            message = session.message
            for m in messages:
                if acts := message(m, 0.0, 11.0):
                    answer(session, acts)

    def ingest() -> None:
        for _ in range(passes):
            session = sessions.pop()
            take = session.messages
            for texts, received in zip(batches, stamps, strict=True):
                while texts:
                    acts, n = take(texts, received, 11.0)
                    if acts:
                        answer(session, acts)
                    texts, received = texts[n:], received[n:]

    session = live_session(exchange, symbols, messages)
    bars_out = 0
    for m in messages:
        bars_out += answer(session, session.message(m, 0.0, 11.0))
    assert not session.stats.malformed, session.stats.malformed  # the stream is what it claims
    assert bars_out or "capture" in name, "the ingest path produced no bars"
    assert landed(session) == session.stats.trades - PRIMED, "trades missed the bars: it would time another path"
    n = len(messages) * passes
    t_bare, t_cf = best_of(repeat, bare), best_of(repeat, baseline)
    t_one, t_ing = best_of(repeat, one_by_one), best_of(repeat, ingest)
    r_or, r_cf = t_bare / t_ing, t_cf / t_ing
    ok_or = ("ok " if r_or >= 0.3 else "LOW") if target else "-  "
    ok_cf = ("ok" if r_cf >= 3 else "LOW") if target else "- "
    print(
        f"{name:<34} {len(messages):>8,} {n / t_ing:>12,.0f} {n / t_bare:>12,.0f} {n / t_cf:>12,.0f}   "
        f"{r_or:5.2f}x {ok_or}   {r_cf:5.2f}x {ok_cf}   {t_bare / t_one:5.2f}x {t_cf / t_one:5.2f}x"
    )
    if breakdown:
        scan = proto.scan_block

        def parse() -> None:
            for _ in range(passes):
                for b in batches:
                    scan(b)

        t_parse = best_of(repeat, parse)
        ns = 1e9 / n
        print(
            f"{'':<34} ns/msg: orjson {t_bare * ns:,.0f}, cf-style {t_cf * ns:,.0f}, one by one {t_one * ns:,.0f},"
            f" ingest {t_ing * ns:,.0f} = block scan {t_parse * ns:,.0f} + session/aggregation/bars"
            f" {(t_ing - t_parse) * ns:,.0f}"
        )
    return r_or, r_cf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=5000, help="bars of real data to render as trades")
    ap.add_argument("--per-bar", type=int, default=200, help="synthetic trades per bar (realistic density)")
    ap.add_argument("--batch", type=int, default=256, help="frames per FeedSession.messages call")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--breakdown", action="store_true", help="also print where an ingested message's time goes")
    ap.add_argument("--exchange", action="append", choices=sorted(PROTOCOLS), metavar="NAME",
                    help="only this exchange's streams (repeatable; default: all)")
    ap.add_argument("--build", choices=("compiled", "pure"), default="compiled",
                    help="time the hot path as `pip install .` compiles it (default) or the pure-Python sources")
    args = ap.parse_args()
    build = hot_path_build()
    if args.build == "compiled" and build != "compiled":
        import hotpath  # bench/, beside this script

        try:
            tree = hotpath.cached(ROOT)
        except hotpath.BuildFailed as exc:
            build = f"pure (asked for compiled, which did not build: {exc})"
        else:  # the same run from the compiled copy of the tree
            env = {**os.environ, "BARCAST_SHARED_DIR": str(SHARED)}
            os.execve(sys.executable, [sys.executable, str(tree / "bench" / Path(__file__).name), *sys.argv[1:]], env)
    bars = read_bars_csv(
        SHARED / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="binance", symbol="BTC-USDT", interval="5m"
    )[: args.bars]
    print(f"hot path: {build}")
    print(
        f"one core (CPU time), best of {args.repeat}; synthetic trades rendered from {len(bars)} real 5m bars, "
        f"{args.per_bar} trades per bar (the sparse worst case, 4 per bar, is not a target); "
        f"ingest in batches of {args.batch} frames"
    )
    print(
        f"{'stream':<34} {'msgs':>8} {'ingest/s':>12} {'orjson/s':>12} {'cf-style/s':>12}   "
        f"{'vs orjson':>9}   {'vs cf-style':>9}   {'one by one: vs orjson, cf':>25}"
    )
    only = set(args.exchange or PROTOCOLS)
    for exchange, proto in PROTOCOLS.items():
        if exchange not in only:
            continue
        native = proto.native_symbol("BTC-USDT")
        for per_bar in (args.per_bar, SPARSE):
            trades = list(synth_trades(exchange, "BTC-USDT", native, bars, per_bar=per_bar))
            msgs = [proto.render_trade(t, SimState(now_us=t.time_us)) for t in trades]
            dense = per_bar != SPARSE
            label = f"{exchange} trades ({per_bar}/bar)" if dense else f"{exchange} (sparse, not a target)"
            run(label, exchange, msgs, args.repeat, args.batch, args.breakdown and dense, target=dense)
            if dense and proto.bundles_trades:
                label = f"{exchange} busy (1-6 a frame)"
                run(label, exchange, busy(proto, trades), args.repeat, args.batch, args.breakdown, target=False)
    for exchange, name in CAPTURES.items():
        if exchange not in only:
            continue
        capture = [r.raw for r in read_capture(SHARED / "captures" / name)]
        run(f"{exchange} capture (real)", exchange, capture, args.repeat, args.batch, args.breakdown)


if __name__ == "__main__":
    main()
