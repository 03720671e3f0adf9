"""A database for the retention tests: four days of real 5-minute bars with two gaps (one well
before the cut-off, one across it), forecasts on every third bar, scored as the daemon scores
them, a model registry with every kind of model retention must keep or may drop, calibration
states and training jobs. `expected_sets` is the rule written out in plain Python, as the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from daemon.live.scoring import score
from db import artifacts, jobs, registry
from db.bars import read_bars, upsert_bars
from db.calibration import store_states
from db.csvbars import read_bars_csv
from db.engine import Database
from db.forecasts import insert_forecasts
from db.records import Bar, CalibrationState, Forecast, ModelInfo, SeriesKey
from db.schema import forecast_scores, forecasts, training_jobs
from db.scores import insert_scores, unscored_steps
from tests.daemon.opsdata import PERSISTENCE, forecasts_for

BTC = SeriesKey("binance", "BTC-USDT", "5m")
ETH = SeriesKey("binance", "ETH-USDT", "5m")
FILES = {BTC: "btcusdt_binance_5m_2020-12_2021-07.csv", ETH: "ethusdt_binance_5m_2020-12_2021-07.csv"}
START = datetime(2021, 1, 1, tzinfo=UTC)
DAYS = 4
#: retention.forecasts_days of the tests: the cut-off is the newest bar minus this.
FORECAST_DAYS = 2.0
NEWEST = START + timedelta(days=DAYS) - BTC.step
CUTOFF = NEWEST - timedelta(days=FORECAST_DAYS)
#: Missing bars: an old gap, and one across the cut-off (its steps after the cut-off still wait).
GAPS = [(START + timedelta(days=1), START + timedelta(days=1, hours=3)),
        (CUTOFF - timedelta(hours=1), CUTOFF + timedelta(hours=1))]
#: An old forecast set left unscored although its bars are stored (the scorer may still score it).
LATE = "late-model"
#: The wall clock of the model, calibration and job rules ("now" of the prune).
NOW = datetime(2021, 6, 1, tzinfo=UTC)
KEEP_MODELS = 2


def in_gap(t: datetime) -> bool:
    return any(a <= t < b for a, b in GAPS)


@dataclass
class Seeded:
    bars: dict[SeriesKey, list[Bar]]
    sets: dict[tuple[SeriesKey, datetime, str], Forecast]


def seed(database: Database, shared_dir: Path) -> Seeded:
    stored: dict[SeriesKey, list[Bar]] = {}
    for key, name in FILES.items():
        bars = [replace(b, source="import") for b in read_bars_csv(
            shared_dir / "data" / name, exchange=key.exchange, symbol=key.symbol, interval=key.interval)
            if START <= b.open_time <= NEWEST and not (key == BTC and in_gap(b.open_time))]
        upsert_bars(database, bars)
        stored[key] = read_bars(database, key, since=START)
    created = START
    fcs = [forecasts_for(stored[BTC], i, PERSISTENCE, created) for i in range(len(stored[BTC])) if i % 3 == 0]
    # ETH stopped being forecast after its first day: all its forecasts are old, its newest must stay
    fcs += [forecasts_for(stored[ETH], i, PERSISTENCE, created) for i in range(0, 288, 3)]
    # a retired model whose only forecast is old and scored: free once that forecast goes
    fcs.append(forecasts_for(stored[BTC], 20, "old-fc", created))
    insert_forecasts(database, fcs)
    insert_scores(database, score(unscored_steps(database, [BTC, ETH]), created))
    late = forecasts_for(stored[BTC], 10, LATE, created)
    forecast_by_model = forecasts_for(stored[BTC], len(stored[BTC]) - 7, "loser-fc", created)
    insert_forecasts(database, [late, forecast_by_model])
    fcs += [late, forecast_by_model]
    _models(database)
    _jobs(database)
    return Seeded(stored, {(f.series, f.issued_at, f.model_id): f for f in fcs})


def _model(database: Database, model_id: str, series: SeriesKey, days_old: float) -> ModelInfo:
    info = ModelInfo(model_id, "linear", (series,), None, None, {}, {"mae": 1.0}, None, status="retired",
                     created_at=NOW - timedelta(days=days_old))
    registry.register_model(database, info)
    return info


def _models(database: Database) -> None:
    _model(database, "old-champ", BTC, 300)
    registry.promote(database, "old-champ", BTC)  # a champion term refers to it for good
    _model(database, PERSISTENCE, BTC, 1)
    registry.promote(database, PERSISTENCE, BTC)
    _model(database, "young", BTC, 10)
    for i in range(1, 5):
        _model(database, f"loser-{i}", BTC, 200 + i)
    _model(database, "loser-art", BTC, 250)
    artifacts.put(database, "loser-art", {"model.json": b"{}", "weights.npz": b"\x00" * 100})
    _model(database, "loser-fc", BTC, 260)
    _model(database, "loser-cal", BTC, 270)
    _model(database, LATE, BTC, 280)
    _model(database, "old-fc", BTC, 290)
    for i, name in enumerate(("eth-a", "eth-b", "eth-c")):
        _model(database, name, ETH, 300 + i)
    store_states(database, [
        CalibrationState(BTC, PERSISTENCE, {"x": 1}, NOW - timedelta(days=200)),  # the champion's: kept
        CalibrationState(BTC, "old-champ", {"x": 2}, NOW - timedelta(days=200)),  # stale, not champion
        CalibrationState(BTC, "loser-cal", {"x": 3}, NOW - timedelta(days=1)),  # recent: kept
    ])


#: Models retention may drop (the rest must stay): retired, never champion, old, not among the
#: newest KEEP_MODELS of their series, no forecast and no calibration state left once the
#: same prune has deleted the old ones.
PRUNABLE_MODELS = {"loser-1", "loser-2", "loser-3", "loser-4", "loser-art", "old-fc", "eth-c"}


def _jobs(database: Database) -> None:
    """Jobs: done and failed long ago (go), done recently (stays), queued and running (stay)."""
    for group, status, finished in (("g-old-done", "done", 40), ("g-old-failed", "failed", 45),
                                    ("g-young-done", "done", 5), ("g-queued", "queued", None),
                                    ("g-running", "running", None)):
        job_id = jobs.enqueue(database, group, str(BTC), "test")
        with database.begin() as conn:
            values: dict[str, object] = {"status": status, "created_at": NOW - timedelta(days=60)}
            if finished is not None:
                values.update(active_group=None, finished_at=NOW - timedelta(days=finished))
            if status == "running":
                values.update(claimed_by="someone", lease_expires_at=NOW + timedelta(minutes=2))
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(**values))


def expected_sets(database: Database, seeded: Seeded,
                  days: float = FORECAST_DAYS) -> set[tuple[SeriesKey, datetime, str]]:
    """The forecast sets a prune with `days` leaves, by the rule in plain Python."""
    with database.engine.connect() as conn:
        scored = {(r.exchange, r.symbol, r.interval, r.issued_at, r.model_id, r.step)
                  for r in conn.execute(select(forecast_scores))}
    keep = set()
    for key, bars in seeded.bars.items():
        have = {b.open_time for b in bars}
        cutoff = bars[-1].open_time - timedelta(days=days)
        mine = [k for k in seeded.sets if k[0] == key]
        newest = max(k[1] for k in mine)
        for k in mine:
            f = seeded.sets[k]
            waiting = any((key.exchange, key.symbol, key.interval, f.issued_at, f.model_id, step) not in scored
                          and (t >= cutoff or t in have)
                          for step, t in enumerate(f.target_times, start=1))
            if f.issued_at >= cutoff or f.issued_at >= newest or waiting:
                keep.add(k)
    return keep


def stored_sets(database: Database) -> dict[tuple[SeriesKey, datetime, str], int]:
    """Forecast sets in the database and their step counts."""
    with database.engine.connect() as conn:
        rows = conn.execute(select(forecasts.c.exchange, forecasts.c.symbol, forecasts.c.interval,
                                   forecasts.c.issued_at, forecasts.c.model_id)).all()
    out: dict[tuple[SeriesKey, datetime, str], int] = {}
    for r in rows:
        k = (SeriesKey(r[0], r[1], r[2]), r[3], r[4])
        out[k] = out.get(k, 0) + 1
    return out
