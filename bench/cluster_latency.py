"""Per-bar latency of the live path at 10, 100 and 1,000 series: from a bar close (the bars of
every series at one boundary stored, fenced, in one transaction) to all their forecasts committed
(fenced, one set per bar), and to the end of the batch (scoring included), on PostgreSQL and,
side by side in the same run, on SQLite.

    python bench/cluster_latency.py [--pg URL] [--sizes 10,100,1000] [--rounds 12]

The real `Pipeline` (coalescing, inference thread, writer thread, set-based scoring), all
series in one model group, with the persistence baseline serving (inference costs ~0.2 ms per
series; this measures the database side). `--pg` (default `$BARCAST_TEST_PG_URL`) is a server
URL: the run gets its own database, dropped afterwards. Prints p50/p99 per boundary and the
per-series cost; the issue-13 target is 1,000 series <= 2 s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

from daemon.config import Config, SeriesConfig
from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import ModelBook
from daemon.live.pipeline import Pipeline
from db import cluster
from db.bars import upsert_bars
from db.cluster import Fence
from db.engine import Database, normalise_url, open_database
from db.records import Bar, SeriesKey
from trainer.params import DataParams

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW = 256


def _bar(key: SeriesKey, i: int, k: int) -> Bar:
    p = Decimal(100 + k) + Decimal(i % 17) / 10
    return Bar(key.exchange, key.symbol, key.interval, T0 + timedelta(minutes=5 * i), p, p + 1, p - 1, p,
               Decimal("2.5"), 10)


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _measure(db: Database, n: int, rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    keys = [SeriesKey("binance", f"S{k:04d}-USDT") for k in range(n)]
    # one model group: 1,000 series sharing a model is the realistic shape (and one load at start)
    config = Config(series=tuple(SeriesConfig(k.exchange, k.symbol, model_group="bench") for k in keys),
                    data=DataParams(window=WINDOW))
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp)))
    await asyncio.to_thread(upsert_bars, db, [_bar(key, i, k) for k, key in enumerate(keys) for i in range(WINDOW)])
    won = await asyncio.to_thread(cluster.claim, db, "bench", keys, timedelta(hours=1), force=True)
    fence = Fence("bench", won)
    pipe = Pipeline(config, db, book=ModelBook(), forecast_log=ForecastLog(tmp / f"f{n}.jsonl"),
                    fence=lambda: fence)
    await asyncio.to_thread(pipe.restore)
    for g in dict.fromkeys(config.model_group(k) for k in keys):
        await pipe.install(g)
    pipe.start()
    committed, whole = [], []
    for r in range(rounds + 2):  # two warm-up boundaries
        i = WINDOW + r
        bars = [_bar(key, i, k) for k, key in enumerate(keys)]
        target = pipe.stats.forecasts + n
        t0 = time.perf_counter()
        await asyncio.to_thread(upsert_bars, db, bars, fence=fence)
        for b in bars:
            await pipe.on_bar(b)
        while pipe.stats.forecasts < target:
            await asyncio.sleep(0.001)
        t1 = time.perf_counter()
        await pipe.idle()
        t2 = time.perf_counter()
        if r >= 2:
            committed.append(t1 - t0)
            whole.append(t2 - t0)
    await pipe.drain()
    pipe.close()
    return committed, whole


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default=os.environ.get("BARCAST_TEST_PG_URL", ""))
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    if not args.pg:
        sys.exit("give --pg postgresql://… or set BARCAST_TEST_PG_URL")
    sizes = [int(x) for x in args.sizes.split(",")]
    name = f"barcast_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(args.pg), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg_url = normalise_url(args.pg).set(database=name).render_as_string(hide_password=False)
    print(f"{'engine':<11}{'series':>7}{'commit p50 s':>14}{'commit p99 s':>14}{'batch p50 s':>13}"
          f"{'per series ms':>15}")
    results: dict[tuple[str, int], float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                for engine, url in (("postgresql", pg_url), ("sqlite", f"sqlite:///{tmp}/bench-{n}.db")):
                    db = open_database(url)
                    try:
                        committed, whole = asyncio.run(_measure(db, n, args.rounds, Path(tmp) / f"{engine}-{n}"))
                    finally:
                        db.close()
                    p50 = statistics.median(committed)
                    results[(engine, n)] = p50
                    print(f"{engine:<11}{n:>7}{p50:>14.3f}{_percentile(committed, 0.99):>14.3f}"
                          f"{statistics.median(whole):>13.3f}{p50 / n * 1000:>15.2f}")
                with open_database(pg_url).engine.begin() as conn:  # next size on a clean database
                    conn.execute(text("TRUNCATE bars, forecasts, forecast_scores, forecast_seq, series_leases, "
                                      "calibration"))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    for n in sizes:
        pg, lite = results[("postgresql", n)], results[("sqlite", n)]
        print(f"{n} series: PostgreSQL / SQLite = {pg / lite:.2f}x (same run)")
    if 1000 in sizes:
        p50 = results[("postgresql", 1000)]
        print(f"target 1,000 series <= 2 s on PostgreSQL: p50 {p50:.2f} s -> {'met' if p50 <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
