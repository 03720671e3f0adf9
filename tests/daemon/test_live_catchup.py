"""Catch-up (bars that did not arrive live: replayed from the database, fetched by REST backfill)
is told apart from live forecasting: one line when it starts and one when it ends, no "model is
slower than bars arrive" warning for the full queue that paces it, and its forecasts stay out of
the live latency histogram (`daemon/live/catchup.py`). A daemon whose live bars really outrun the
model still warns."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import metrics
from daemon.config import Config, SeriesConfig, load_config
from daemon.feeds import PROTOCOLS
from daemon.feeds.simulator import ExchangeSimulator, SimSeries
from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import ModelBook
from daemon.live.notify import Notifier
from daemon.live.pipeline import BATCH_QUEUE, Pipeline
from daemon.live.service import Service
from db.bars import upsert_bars
from db.engine import Database, open_database
from db.forecasts import query_forecasts
from tests.daemon.livehelp import SERIES, SIM_START, config_text, real_bars, seed_history
from tests.daemon.test_live_units import S, bar
from trainer.params import DataParams

QUEUE_FULL_WARNING = "forecast queue full"


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _counts() -> dict[str, float]:
    """The latency histograms' counts and the forecast queue's full count (the registry is
    process-wide: tests compare differences)."""
    return {"live": _sample("barcast_forecast_latency_seconds_count"),
            "catchup": _sample("barcast_forecast_catchup_latency_seconds_count"),
            "full": _sample("barcast_queue_full_total", queue="forecast_batches")}


def _lines(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "barcast.live" and r.getMessage().startswith(start)]


def _config(tmp_path: Path) -> Config:
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),), data=DataParams(window=8))
    return dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))


def test_stored_bars_replayed_at_start_are_a_catch_up_not_live(tmp_db: Database, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A daemon that stored bars it never forecast (killed between storing and forecasting) starts
    with more of them than the forecast queue holds: they are one catch-up, announced with how
    many bars, ended with how many forecasts, with no queue-full warning; their latency is not
    in the live histogram. A live bar after it is."""
    caplog.set_level(logging.INFO)
    config = _config(tmp_path)
    behind = BATCH_QUEUE + 36
    upsert_bars(tmp_db, [bar(i) for i in range(9)])

    async def first() -> None:  # forecasts bar 8, the newest forecast before the crash
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        await pipe.install(config.model_group(S))
        pipe.start()
        await pipe.catch_up()
        await pipe.drain()
        pipe.close()

    asyncio.run(first())
    upsert_bars(tmp_db, [bar(i) for i in range(9, 9 + behind)])  # stored, never forecast
    caplog.clear()
    before = _counts()

    async def second() -> dict[str, Any]:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        await pipe.install(config.model_group(S))
        pipe.start()
        await pipe.catch_up()
        await pipe.idle()
        seen = {"after_catch_up": _counts(), "pipeline": pipe}
        live = bar(9 + behind)
        upsert_bars(tmp_db, [live])
        await pipe.on_bar(live)
        await pipe.drain()
        pipe.close()
        return seen

    seen = asyncio.run(second())
    after = _counts()
    assert not [r for r in caplog.records if QUEUE_FULL_WARNING in r.getMessage()]
    starts, ends = _lines(caplog, "catching up"), _lines(caplog, "caught up")
    assert [(r.bars, r.source) for r in starts] == [(behind, "stored")]  # type: ignore[attr-defined]
    assert [(r.bars, r.forecasts) for r in ends] == [(behind, behind)]  # type: ignore[attr-defined]
    caught = seen["after_catch_up"]
    assert caught["catchup"] - before["catchup"] == behind  # one series: one batch per bar
    assert caught["live"] == before["live"], "a catch-up forecast went to the live latency"
    assert caught["full"] == before["full"]
    assert after["live"] - before["live"] == 1 and after["catchup"] == caught["catchup"]
    status = seen["pipeline"].catchup.status(0.0)
    assert status["active"] is False and status["last"]["bars"] == behind
    issued = {f.issued_at for f in query_forecasts(tmp_db, S, limit=None)}
    assert issued == {bar(i).open_time for i in range(8, 10 + behind)}


def test_one_bar_a_series_is_a_routine_catch_up_logged_at_debug(tmp_db: Database, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """While a feed is down its REST poll hands over one bar a series every bar: two info lines a
    bar through a long outage said nothing the `backfilled` line had not. At most one bar a
    series is logged at debug; once an episode grows past that, it opens at info after all."""
    caplog.set_level(logging.DEBUG, "barcast.live")
    pipe = Pipeline(_config(tmp_path), tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
    try:
        with pipe.catching_up(1, "backfill", [S]):
            pass
        lines = _lines(caplog, "catching up") + _lines(caplog, "caught up")
        assert len(lines) == 2 and {r.levelno for r in lines} == {logging.DEBUG}
        caplog.clear()
        with pipe.catching_up(1, "backfill", [S]), pipe.catching_up(5, "backfill", [S]):
            pass
        info = [(r.getMessage().split(":")[0], r.bars) for r in  # type: ignore[attr-defined]
                _lines(caplog, "catching up") + _lines(caplog, "caught up") if r.levelno == logging.INFO]
        assert info == [("catching up", 5), ("caught up", 6)], info
    finally:
        pipe.close()


def test_live_bars_outrunning_the_model_still_warn(tmp_db: Database, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The steady state the warning is for: live bars fill the queue while the model is busy."""
    caplog.set_level(logging.INFO)
    config = _config(tmp_path)
    upsert_bars(tmp_db, [bar(i) for i in range(8)])
    live = [bar(i) for i in range(8, 8 + BATCH_QUEUE + 4)]
    before = _counts()

    async def main() -> None:
        pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
        await asyncio.to_thread(pipe.restore)
        await pipe.install(config.model_group(S))
        upsert_bars(tmp_db, live)  # as the ingest does: stored, then handed over
        pipe.start()
        busy = threading.Event()
        model_busy = asyncio.ensure_future(pipe.inference.run(busy.wait))  # the model thread is busy

        async def feed() -> None:
            for b in live:
                await pipe.on_bar(b)

        feeding = asyncio.create_task(feed())
        for _ in range(10_000):  # until the feed waits on the full queue
            if pipe.stats.queue_full:
                break
            await asyncio.sleep(0)
        busy.set()
        await model_busy
        await feeding
        await pipe.drain()
        pipe.close()

    asyncio.run(main())
    after = _counts()
    warned = [r for r in caplog.records if QUEUE_FULL_WARNING in r.getMessage()]
    assert len(warned) == 1 and "the model is slower than bars arrive" in warned[0].getMessage()
    assert not _lines(caplog, "catching up")
    assert after["full"] > before["full"]
    assert after["live"] - before["live"] == len(live) and after["catchup"] == before["catchup"]


@pytest.mark.slow
def test_a_daemon_restarting_behind_catches_up_apart_from_live(shared_dir: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The whole service against the exchange simulator: the database ends 12 hours before the
    exchange's present, so the start backfills 144 bars and forecasts each (more than the
    forecast queue holds) before the live bars. The log says it is catching up and when it is
    done, not that the model is slow; /metrics keeps those forecasts out of the live latency;
    `barcast status` says the daemon caught up."""
    caplog.set_level(logging.INFO)
    history_end = SIM_START - timedelta(hours=12)
    backlog = 144
    played = real_bars(shared_dir, SIM_START + timedelta(hours=3))
    db_url = f"sqlite:///{tmp_path / 'barcast.db'}"
    seed_history(db_url, played, history_end)
    cfg_path = tmp_path / "barcast.toml"
    before = _counts()
    seen: dict[str, Any] = {}

    async def backlog_forecast(db: Database) -> bool:
        found = await asyncio.to_thread(query_forecasts, db, SERIES, since=history_end, until=SIM_START, limit=None)
        return len({f.issued_at for f in found}) >= backlog

    async def main() -> None:
        sim = ExchangeSimulator(PROTOCOLS["binance"], [SimSeries("BTC-USDT", tuple(played))], speed=600,
                                start=SIM_START.timestamp(), heartbeat_s=0.05)
        async with sim:
            cfg_path.write_text(config_text(tmp_path, db_url, sim.ws_url, sim.rest_url))
            svc = Service(load_config(cfg_path, env={}), clock=sim.clock.now, notifier=Notifier(""))
            run = asyncio.create_task(svc.run())
            db = open_database(db_url)
            try:
                for _ in range(3000):  # the backlog forecast, caught up, then live bars forecast
                    assert not run.done(), "the service stopped"
                    if (not _sample("barcast_catching_up") and _counts()["live"] - before["live"] >= 2
                            and await backlog_forecast(db)):
                        break
                    await asyncio.sleep(0.1)
                async with httpx.AsyncClient(base_url=svc.api.url) as client:  # type: ignore[union-attr]
                    seen["metrics"] = (await client.get("/metrics")).text
                    seen["status"] = (await client.get("/status")).json()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "daemon", "status", "--api", svc.api.url,  # type: ignore[union-attr]
                    env={**os.environ, "BARCAST_CONFIG": str(cfg_path), "COLUMNS": "200"},
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                seen["cli"] = out.decode()
            finally:
                db.close()
                svc.stop_event.set()
                await asyncio.wait_for(run, 60)

    asyncio.run(main())
    after = _counts()
    db = open_database(db_url)
    stored = query_forecasts(db, SERIES, since=history_end - timedelta(minutes=5), limit=None)
    db.close()
    behind = [f for f in stored if f.issued_at < SIM_START]
    assert len(behind) >= backlog
    # the log: catching up (the backfill's 144 bars), caught up; never "the model is slower"
    assert not [r for r in caplog.records if QUEUE_FULL_WARNING in r.getMessage()]
    starts, ends = _lines(caplog, "catching up"), _lines(caplog, "caught up")
    assert (backlog, "backfill") in [(r.bars, r.source) for r in starts]  # type: ignore[attr-defined]
    opened = _lines(caplog, "catching up: forecasting")  # the others: a source joined an open catch-up
    assert len(ends) == len(opened) and sum(r.forecasts for r in ends) >= len(behind)  # type: ignore[attr-defined]
    # the metrics: every forecast of the backlog is a catch-up one; live ones only after
    assert after["catchup"] - before["catchup"] >= len(behind)
    assert 1 <= after["live"] - before["live"] <= len([f for f in stored if f.issued_at >= SIM_START])
    assert after["full"] == before["full"]
    assert "barcast_forecast_catchup_latency_seconds_count" in seen["metrics"]
    assert "barcast_catching_up 0.0" in seen["metrics"]
    catch_up = seen["status"]["catch_up"]
    assert catch_up["active"] is False and catch_up["last"]["forecasts"] >= 1, catch_up
    assert "catch-up: caught up (the last:" in seen["cli"], seen["cli"]
    assert datetime.fromisoformat(catch_up["last"]["ended_at"].replace("Z", "+00:00")) <= datetime.now(UTC)
