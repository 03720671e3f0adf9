"""A database as operators would see it: real bars through the import path, forecasts, scores, a champion.

Built once per test session (the import is the slow part) and copied for each test that writes.
Forecasts are honest baselines computed from the real bars: persistence (the last close held, with a
Gaussian random-walk fan from the last 48 bars' volatility at LEVELS) and a point-only drift model
(the last close plus the mean change of the previous 16 bars per step), as old rows are. Scores come from
the live scorer's own pure function over `unscored_steps`, as the daemon computes them, against a
climatology `Reference` built from the REFERENCE_DAYS of bars before the first forecast.
"""

from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from daemon.live.scoring import Reference, score
from db import registry
from db.bars import read_bars, upsert_bars
from db.csvbars import read_bars_csv
from db.engine import Database, open_database
from db.forecasts import insert_forecasts
from db.records import Bar, Forecast, ModelInfo, SeriesKey
from db.scores import insert_scores, unscored_steps

BTC = SeriesKey("binance", "BTC-USDT", "5m")
ETH = SeriesKey("binance", "ETH-USDT", "5m")
FILES = {BTC: "btcusdt_binance_5m_2020-12_2021-07.csv", ETH: "ethusdt_binance_5m_2020-12_2021-07.csv"}
HORIZON = 16
FORECAST_BARS = 200  # forecasts issued on each of the last 200 bars
PERSISTENCE = "persistence"
DRIFT = "drift-16"
LEVELS = (0.1, 0.5, 0.9)
_Z = (-1.2815515655446004, 0.0, 1.2815515655446004)
REFERENCE_DAYS = 30

_cache: dict[str, Path] = {}


def forecasts_for(bars: list[Bar], i: int, model_id: str, created: datetime) -> Forecast:
    """The forecast a baseline issues on bar `i` (it sees bars[: i + 1])."""
    last = bars[i]
    step = last.series.step
    targets = tuple(last.open_time + step * (k + 1) for k in range(HORIZON))
    c = float(last.close)
    if model_id == DRIFT:
        back = bars[max(0, i - HORIZON)]
        slope = (c - float(back.close)) / max(1, i - max(0, i - HORIZON))
        closes = tuple(c + slope * (k + 1) for k in range(HORIZON))
        return Forecast(last.series, last.open_time, model_id, targets, closes, last_close=last.close,
                        latency_ms=3.5, created_at=created)
    closes = tuple(c for _ in range(HORIZON))
    logs = [math.log(float(b.close)) for b in bars[max(0, i - 48) : i + 1]]
    rets = [b - a for a, b in itertools.pairwise(logs)]
    sigma = math.sqrt(sum(r * r for r in rets) / max(1, len(rets)))
    quantiles = tuple(tuple(c * math.exp(z * sigma * math.sqrt(k + 1)) for z in _Z) for k in range(HORIZON))
    return Forecast(last.series, last.open_time, model_id, targets, closes, last_close=last.close,
                    latency_ms=3.5, created_at=created, levels=LEVELS, quantiles=quantiles)


def fill(database: Database, shared_dir: Path) -> None:
    for key, name in FILES.items():
        bars = read_bars_csv(shared_dir / "data" / name, exchange=key.exchange, symbol=key.symbol,
                             interval=key.interval)
        upsert_bars(database, [replace(b, source="import") for b in bars])
    created = datetime(2021, 7, 17, 22, 0, tzinfo=UTC)
    for key in FILES:
        bars = read_bars(database, key, since=datetime(2021, 7, 14, tzinfo=UTC))
        first = len(bars) - FORECAST_BARS
        fcs = [forecasts_for(bars, i, m, created) for i in range(first, len(bars)) for m in (PERSISTENCE, DRIFT)]
        insert_forecasts(database, fcs)
        # Score what the daemon would have scored: every step whose target bar is stored.
        insert_scores(database, score(unscored_steps(database, key), created, {key: reference(database, bars[first])}))
        info = ModelInfo(
            id=f"{DRIFT}-{key.symbol.lower()}", arch="drift", series=(key,),
            train_start=bars[0].open_time, train_end=bars[first].open_time, params={"horizon": HORIZON},
            metrics={"mae": 12.5}, artifact_path=None, created_at=created - timedelta(days=1),
        )
        registry.register_model(database, info)
        registry.promote(database, info.id, key, reason="test fixture")


def reference_bars(database: Database, first: Bar) -> list[Bar]:
    """The bars climatology is built from: REFERENCE_DAYS before the first forecast's bar."""
    return read_bars(database, first.series, since=first.open_time - timedelta(days=REFERENCE_DAYS),
                     until=first.open_time)


def reference(database: Database, first: Bar) -> Reference:
    bars = reference_bars(database, first)
    ref = Reference.build(np.array([int(b.open_time.timestamp()) for b in bars]),
                          np.array([float(b.close) for b in bars]), through=bars[-1].open_time, horizon=HORIZON,
                          step_s=int(first.series.step.total_seconds()), levels=LEVELS)
    assert ref is not None
    return ref


def ops_db_url(tmp_path: Path, shared_dir: Path, base: Path) -> str:
    """A private copy of the session's operator database in `tmp_path`."""
    if "path" not in _cache:
        path = base / "ops-base.db"
        database = open_database(f"sqlite:///{path}")
        try:
            fill(database, shared_dir)
        finally:
            database.close()
        _cache["path"] = path
    target = tmp_path / "ops.db"
    shutil.copyfile(_cache["path"], target)
    return f"sqlite:///{target}"


def last_close(database: Database, key: SeriesKey) -> Decimal:
    return read_bars(database, key, limit=1, newest_first=True)[0].close
