"""Ingest rate on one core: messages/s through parse + aggregate, next to a bare orjson.loads loop.

Messages are the simulator's rendering of real bars (../shared/data) in each exchange's protocol,
plus the real Coinbase capture (mostly order-book traffic that is classified and skipped).

    python bench/ingest_rate.py [--bars 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from daemon.bars import Aggregator
from daemon.feeds import PROTOCOLS
from daemon.feeds.base import SimState
from daemon.feeds.capture import read_capture
from daemon.feeds.simulator import synth_trades
from db.csvbars import read_bars_csv
from db.records import SeriesKey

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(name: str, exchange: str, messages: list[str], repeat: int) -> None:
    proto = PROTOCOLS[exchange]

    def bare() -> None:
        for m in messages:
            orjson.loads(m)

    def full() -> None:
        aggs: dict[str, Aggregator] = {}
        for m in messages:
            res = proto.parse(m)
            for t in res.trades:
                agg = aggs.get(t.symbol)
                if agg is None:
                    agg = aggs[t.symbol] = Aggregator(SeriesKey(exchange, t.symbol, "5m"))
                agg.add(t)

    n = len(messages)
    t_bare, t_full = best_of(repeat, bare), best_of(repeat, full)
    print(
        f"{name:<34} {n:>8,} msgs  parse+aggregate {n / t_full:>11,.0f} msg/s   "
        f"orjson.loads {n / t_bare:>11,.0f} msg/s   ratio {t_full / t_bare:5.1f}x slower"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=5000, help="bars of real data to render as trades")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bars = read_bars_csv(
        SHARED / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="binance", symbol="BTC-USDT", interval="5m"
    )[: args.bars]
    print(f"one core, best of {args.repeat}; trades rendered from {len(bars)} real 5m bars")
    for exchange, proto in PROTOCOLS.items():
        native = proto.native_symbol("BTC-USDT")
        msgs = [
            proto.render_trade(t, SimState(now_us=t.time_us)) for t in synth_trades(exchange, "BTC-USDT", native, bars)
        ]
        run(f"{exchange} trades (simulator)", exchange, msgs, args.repeat)
    capture = [r.raw for r in read_capture(SHARED / "captures" / "COINBASE.ws.28.0")]
    run("coinbase capture (real, mixed)", "coinbase", capture, args.repeat)


if __name__ == "__main__":
    main()
