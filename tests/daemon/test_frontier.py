"""Which stored bars get forecast when bars reach a daemon out of order or through another
daemon: the pure decision (`frontier.replay_start`, `RollingWindow.fits`) and the pipeline on a
real SQLite database (a late backfill page, a hole a dead owner left, a bar already forecast)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from daemon.config import Config, SeriesConfig
from daemon.live.forecastlog import ForecastLog
from daemon.live.frontier import replay_start
from daemon.live.inference import ModelBook
from daemon.live.pipeline import Pipeline
from daemon.live.window import RollingWindow
from db.bars import upsert_bars
from db.engine import Database
from db.forecasts import query_forecasts
from db.records import Bar, SeriesKey
from trainer.params import DataParams

S = SeriesKey("binance", "BTC-USDT")
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def t(i: int) -> datetime:
    return T0 + timedelta(minutes=5 * i)


def bar(i: int) -> Bar:
    c = D(100 + i)
    return Bar("binance", "BTC-USDT", "5m", t(i), c, c + 1, c - 1, c, D("1.5"), 3)


def test_replay_starts_at_the_first_unforecast_bar_after_a_forecast_one() -> None:
    times = [t(i) for i in range(10)]
    assert replay_start(times, set(), None) == 10  # never forecast: history, nothing replayed
    assert replay_start(times, {t(i) for i in range(10)}, t(9)) == 10  # all done
    assert replay_start(times, {t(5), t(6)}, t(6)) == 7  # the tail after the newest forecast
    assert replay_start(times, {t(5), t(7), t(8), t(9)}, t(9)) == 6  # a hole in the middle
    assert replay_start(times, set(), t(-50)) == 0  # forecasts older than every bar: a long outage


def test_window_says_how_a_bar_fits() -> None:
    w = RollingWindow(4, "5m")
    assert w.fits(bar(3)) == "next"
    w.extend([bar(3), bar(4)])
    assert [w.fits(bar(i)) for i in (5, 4, 3, 2, 7)] == ["next", "amend", "amend", "missing", "gap"]
    w.extend([bar(5), bar(6)])
    assert w.fits(bar(1)) == "old"  # older than a full window: irrelevant
    filled = RollingWindow(4, "5m", fill_gaps=1)
    filled.push(bar(0))
    assert (filled.fits(bar(2)), filled.fits(bar(3))) == ("next", "gap")


def _config(tmp_path: Path) -> Config:
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),), data=DataParams(window=4))
    return dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))


def _issued(db: Database) -> list[int]:
    return sorted(int((f.issued_at - T0) / timedelta(minutes=5)) for f in query_forecasts(db, S, limit=1000))


def test_a_late_bar_and_a_dead_owners_hole_are_forecast_once_in_order(tmp_db: Database, tmp_path: Path) -> None:
    config = _config(tmp_path)
    upsert_bars(tmp_db, [bar(i) for i in range(4)])

    async def main() -> tuple[Pipeline, list[list[int]]]:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        await pipe.install(config.model_group(S))
        pipe.start()
        seen = []
        for order in ([4, 5], [7, 6], [8]):  # bar 7 is stored and arrives before bar 6 (a slow REST page)
            for i in order:
                upsert_bars(tmp_db, [bar(i)])
                await pipe.on_bar(bar(i))
            await pipe.drain()
            pipe.start()
            seen.append(_issued(tmp_db))
        # another daemon stored bars 9-11, forecast 9 and 11 but died before forecasting 10
        upsert_bars(tmp_db, [bar(i) for i in (9, 10, 11)])
        other = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "g.jsonl"))
        await asyncio.to_thread(other.restore)
        await other.install(config.model_group(S))
        other.start()
        for i in (9, 10, 11):
            other.series[S].window.push(bar(i))
            if i != 10:
                await other._enqueue(S, t(i), 0.0)
                await other._flush(t(i))
        await other.drain()
        other.close()
        seen.append(_issued(tmp_db))
        await pipe.adopt([S])  # the takeover: windows from the database, the hole kept back
        await pipe.catch_up([S])
        await pipe.drain()
        pipe.close()
        seen.append(_issued(tmp_db))
        return pipe, seen

    pipe, seen = asyncio.run(main())
    assert seen[:3] == [[4, 5], [4, 5, 6, 7], [4, 5, 6, 7, 8]]
    assert seen[3] == [4, 5, 6, 7, 8, 9, 11]
    assert seen[4] == list(range(4, 12))  # the hole filled, nothing twice
    assert pipe.stats.resyncs == 2  # bar 7 after a gap, then bar 6 behind it
    by_time = {f.issued_at: f for f in query_forecasts(tmp_db, S, limit=1000)}
    # each forecast saw exactly the bars before it: persistence's point is the bar's own close
    assert all(f.closes[0] == 100 + i for i, f in ((int((k - T0) / timedelta(minutes=5)), f)
                                                    for k, f in by_time.items()))
