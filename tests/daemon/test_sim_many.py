"""exchange-sim for many symbols (random walks, a directory of CSVs) and --start after a gap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from daemon.cli.feeds import sim_series
from daemon.feeds import PROTOCOLS
from daemon.feeds.randomwalk import random_walk_bars
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from db.errors import InputError
from tests.daemon.clirun import barcast

T0 = datetime(2021, 1, 1, tzinfo=UTC)


def test_random_walks_per_symbol_and_csv_directory(tmp_path: Path) -> None:
    walks = sim_series("binance", None, None, ["AAA-USDT", "BBB-USDT"], history=10, walk_bars=5, start=T0)
    assert [s.symbol for s in walks] == ["AAA-USDT", "BBB-USDT"]
    assert all(len(s.bars) == 15 and s.bars[10].open_time == T0 for s in walks)
    assert walks[0].bars[-1].close != walks[1].bars[-1].close  # independent walks
    for s in walks:
        rows = [f"{int(b.open_time.timestamp())},{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in s.bars]
        (tmp_path / f"{s.symbol}.csv").write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    loaded = sim_series("binance", str(tmp_path), None, [])
    assert [(s.symbol, [b.close for b in s.bars]) for s in loaded] == [
        (s.symbol, [b.close for b in s.bars]) for s in walks]
    with pytest.raises(InputError, match="no CSV for CCC-USDT"):
        sim_series("binance", str(tmp_path), None, ["CCC-USDT"])


def test_start_after_a_gap_neither_rewinds_nor_refuses() -> None:
    bars = random_walk_bars("BTC-USDT", 40, start=T0)
    gapped = bars[:10] + bars[20:]  # an outage of 10 bars, over before the start
    start = bars[25].open_time

    async def main() -> tuple[float, bool]:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(gapped))], speed=60,
                                start=start.timestamp())
        async with sim:
            await asyncio.sleep(0.3)
            now = sim.clock.now()
            async with connect(sim.ws_url) as ws:
                return now, ws.state.name == "OPEN"

    now, opened = asyncio.run(main())
    assert now >= start.timestamp() and opened
    assert now < (start + timedelta(minutes=5)).timestamp()


def test_trades_per_frame_only_where_the_exchange_batches_trades(capsys: pytest.CaptureFixture[str]) -> None:
    """Kraken and Poloniex send several trades in one frame on busy markets; asking the others
    to is refused with the reason, in the simulator and on the command line."""
    bars = (random_walk_bars("BTC-USDT", 3, start=T0)[0],)
    assert ExchangeSimulator(PROTOCOLS["kraken"], [SimSeries("BTC-USDT", bars)], trades_per_frame=4)
    with pytest.raises(ValueError, match="binance sends one trade a frame"):
        ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", bars)], trades_per_frame=4)
    with pytest.raises(ValueError, match="must be >= 1"):
        ExchangeSimulator(PROTOCOLS["kraken"], [SimSeries("BTC-USDT", bars)], trades_per_frame=0)
    for protocol, n, reason in [("coinbase", "3", "coinbase sends one trade a frame"), ("kraken", "0", ">= 1")]:
        r = barcast(capsys, "exchange-sim", "--protocol", protocol, "--trades-per-frame", n)
        assert r.code != 0 and "--trades-per-frame" in r.err and reason in r.err, r
