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
