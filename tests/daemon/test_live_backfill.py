"""A fresh install's history backfill: only its newest `forecast.backfill_forecast_bars` bars are
forecast, however many REST pages the backfill takes (the whole service against the simulator)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.notify import Notifier
from daemon.live.service import Service
from db.bars import read_bars
from db.csvbars import read_bars_csv
from db.engine import open_database
from db.forecasts import query_forecasts
from tests.daemon.livehelp import SERIES, SIM_START, config_text

pytestmark = pytest.mark.slow

REACH = 20


def test_multi_page_history_backfill_forecasts_only_its_newest_bars(shared_dir: Path, tmp_path: Path) -> None:
    """7 days of 5m bars are 2,016 bars: three pages of Binance's 1,000 candles. Each page used to
    count `backfill_forecast_bars` back from its own newest bar, so every page had its newest 20
    forecast (with 300-candle Coinbase pages and the default 288, nearly all 30 days were)."""
    bars = [b for b in read_bars_csv(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv",
                                     exchange="binance", symbol="BTC-USDT", interval="5m")
            if SIM_START - timedelta(days=9) <= b.open_time < SIM_START + timedelta(hours=2)]
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"

    async def main() -> None:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(bars))], speed=3000,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            cfg = tmp_path / "barcast.toml"
            cfg.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url)
                           .replace("backfill_days = 1.0", "backfill_days = 7.0")
                           .replace("coalesce_ms = 50", f"coalesce_ms = 50\nbackfill_forecast_bars = {REACH}"))
            svc = Service(load_config(cfg, env={}), clock=sim.clock.now, notifier=Notifier(""))
            run = asyncio.create_task(svc.run())
            db = open_database(db_url)
            try:
                for _ in range(1200):  # until a live bar after the backfill is forecast
                    found = await asyncio.to_thread(query_forecasts, db, SERIES, limit=1)
                    if found and found[0].issued_at >= SIM_START:
                        break
                    assert not run.done(), "the service stopped"
                    await asyncio.sleep(0.1)
            finally:
                db.close()
                svc.stop_event.set()
                await asyncio.wait_for(run, 30)

    asyncio.run(main())
    db = open_database(db_url)
    history = [b.open_time for b in read_bars(db, SERIES, until=SIM_START) if b.source == "backfill"]
    issued = sorted({f.issued_at for f in query_forecasts(db, SERIES, until=SIM_START, limit=None)})
    db.close()
    assert len(history) > 2 * 1000, "the history backfill took several pages"
    # the newest REACH bars before the bar in progress at the start, and that bar (fetched once over)
    assert issued and set(issued) <= set(history[-REACH - 1:]), f"{len(issued)} history bars forecast"
