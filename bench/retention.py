"""What retention does to a database that ran for months: rows and bytes before and after a
prune, and after VACUUM, and the longest single delete transaction (how long the live writer
could wait for SQLite's write lock).

    python bench/retention.py [--days 120] [--keep 90] [--db URL] [CSV]

Fills a database (a temporary SQLite file unless --db) the way a daemon does over `--days` days
of one 5-minute series: real bars (the whole CSV), a forecast with a quantile fan on every bar,
scored as the live scorer scores it, a retired challenger and a finished training job a day,
calibration states; then prunes with `forecasts_days = jobs_days = models_days = --keep`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, update

from daemon.live.scoring import score
from db import jobs, registry
from db.bars import read_bars, upsert_bars
from db.calibration import store_states
from db.csvbars import read_bars_csv
from db.engine import Database, open_database
from db.forecasts import insert_forecasts
from db.records import Bar, CalibrationState, Forecast, ModelInfo, SeriesKey
from db.retention import Policy, prune, vacuum
from db.schema import training_jobs
from db.scores import insert_scores, unscored_steps
from db.stats import database_size_bytes, table_counts

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"
KEY = SeriesKey("binance", "BTC-USDT", "5m")
HORIZON = 16
LEVELS = (0.1, 0.5, 0.9)
Z = (-1.2815515655446004, 0.0, 1.2815515655446004)
TABLES = ("bars", "forecasts", "forecast_scores", "models", "training_jobs", "calibration")


def forecast(bars: list[Bar], i: int, model_id: str) -> Forecast:
    """Persistence with a random-walk fan from the last 48 bars, as the daemon stores one."""
    last = bars[i]
    closes = tuple(float(last.close) for _ in range(HORIZON))
    logs = [math.log(float(b.close)) for b in bars[max(0, i - 48): i + 1]]
    rets = [b - a for a, b in itertools.pairwise(logs)]
    sigma = math.sqrt(sum(r * r for r in rets) / max(1, len(rets)))
    quantiles = tuple(tuple(closes[0] * math.exp(z * sigma * math.sqrt(k + 1)) for z in Z) for k in range(HORIZON))
    return Forecast(KEY, last.open_time, model_id, tuple(last.open_time + KEY.step * (k + 1) for k in range(HORIZON)),
                    closes, last_close=last.close, latency_ms=4.2, created_at=last.open_time + KEY.step,
                    issued_by="bench", levels=LEVELS, quantiles=quantiles)


def fill(database: Database, csv: Path, days: int, now: datetime) -> None:
    bars = [replace(b, source="import") for b in read_bars_csv(csv, exchange=KEY.exchange, symbol=KEY.symbol,
                                                                interval=KEY.interval)]
    upsert_bars(database, bars)
    stored = read_bars(database, KEY)
    first = stored[-1].open_time - timedelta(days=days)
    start = next(i for i, b in enumerate(stored) if b.open_time >= first)
    champion = "har-bench"
    registry.register_model(database, ModelInfo(champion, "har", (KEY,), None, None, {}, {}, None,
                                                status="candidate", created_at=now - timedelta(days=days)))
    registry.promote(database, champion, KEY)
    for lo in range(start, len(stored), 2880):  # ten days a transaction
        chunk = [forecast(stored, i, champion) for i in range(lo, min(lo + 2880, len(stored)))]
        insert_forecasts(database, chunk)
        insert_scores(database, score(unscored_steps(database, KEY, issued_since=chunk[0].issued_at,
                                                     until=chunk[-1].issued_at + KEY.step * HORIZON), now))
    metrics = {"decision": {"reason": "x" * 200}, "per_step": {m: [0.123456789] * HORIZON for m in (
        "mae", "rmse", "pinball", "coverage", "width", "skill", "prob_skill", "mape", "mase", "directional")},
        "walk_forward": [{"origin": i, "mae": 1.0, "pinball": 0.5} for i in range(60)]}
    for d in range(days):  # a retired challenger and a finished job a day
        created = now - timedelta(days=days - d)
        registry.register_model(database, ModelInfo(f"har-bench-{d}", "har", (KEY,), None, None, {"horizon": 16},
                                                    metrics, None, status="retired", created_at=created))
        job = jobs.enqueue(database, f"g{d}", str(KEY), "schedule")
        with database.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job).values(
                status="done", active_group=None, created_at=created, finished_at=created,
                outcome={"model_id": f"har-bench-{d}", "promoted": False, "reason": "x" * 200}))
    state = {"levels": list(LEVELS), "horizon": HORIZON, "offsets": [[0.0] * 3] * HORIZON, "n": 1000}
    store_states(database, [CalibrationState(KEY, champion, state, now)]
                 + [CalibrationState(KEY, f"har-bench-{d}", state, now - timedelta(days=days - d)) for d in range(10)])


def report(label: str, database: Database) -> None:
    counts = table_counts(database)
    size = database_size_bytes(database)
    print(f"{label:<28} " + "  ".join(f"{t} {counts[t]:>8,}" for t in TABLES) + f"  size {size / 1e6:8.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--days", type=int, default=120, help="days of forecasts, models and jobs to fill")
    ap.add_argument("--keep", type=float, default=90.0, help="retention days of each kind")
    ap.add_argument("--batch-rows", type=int, default=5000)
    ap.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'retention.db'}"
        database = open_database(url)
        now = datetime.now(UTC)
        t0 = time.monotonic()
        fill(database, args.csv, args.days, now)
        print(f"filled in {time.monotonic() - t0:.0f} s: {url}")
        report("before", database)
        policy = Policy(forecasts_days=args.keep, jobs_days=args.keep, models_days=args.keep, keep_models=5,
                        batch_rows=args.batch_rows, horizon=HORIZON)
        held: list[float] = []  # seconds of each write transaction (SQLite: its write lock)
        began: list[float] = []
        event.listen(database.engine, "begin", lambda conn: began.append(time.monotonic()))
        event.listen(database.engine, "commit", lambda conn: held.append(time.monotonic() - began[-1]))
        result = prune(database, policy, now=now)
        longest = max(held, default=0.0)
        print(f"pruned {result.total:,} rows in {result.seconds:.1f} s, {result.batches} batches, longest "
              f"batch {longest * 1000:.0f} ms: " + ", ".join(f"{t} {n:,}" for t, n in result.rows.items() if n))
        report("after prune", database)
        t1 = time.monotonic()
        vacuum(database)
        report(f"after VACUUM ({time.monotonic() - t1:.1f} s)", database)
        database.close()


if __name__ == "__main__":
    main()
