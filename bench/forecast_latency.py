"""Bar close -> forecasts stored, for 1, 10 and 100 series: the live path (one compiled
`predict_on_batch` over all series, one transaction) against calling `model.predict` per series
and storing each on its own, side by side in one run on the same model, windows and database.

    python bench/forecast_latency.py [CSV]

Prints median milliseconds per bar boundary for both and the ratio. The model is an LSTM with the
study's shape (256 in, 16 out, 50 units) trained one short epoch on real bars: the weights don't
matter for speed, the graph does.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import Job, ServingModel, forecast_batch
from db.engine import open_database
from db.forecasts import store_new_forecasts
from db.records import Forecast, SeriesKey, utc_from_unix
from trainer.datasets import csv_bars
from trainer.params import DataParams, TrainParams
from trainer.training import fit_on_splits, make_splits

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"
ROUNDS = 7


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    data = DataParams()
    bars = csv_bars(path, data.features)
    splits = make_splits(bars, data)
    model, _ = fit_on_splits("lstm", splits, data=data, train=TrainParams(epochs=1, batch_size=256, stride=64))
    serving = ServingModel.of("bench-lstm", model)
    raw, _ = splits.test.batch(np.arange(100 * ROUNDS * 2))
    windows = np.zeros((raw.shape[0], data.window, 6))
    windows[:, :, 3] = raw[:, :, 0]
    from decimal import Decimal

    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{tmp}/bench.db")
        flog = ForecastLog(Path(tmp) / "f.jsonl")
        print(f"{'series':>7} {'batched ms':>11} {'predict/series ms':>18} {'ratio':>7}")
        t_base = 1_600_000_000
        for n in (1, 10, 100):
            keys = [SeriesKey("sim", f"S{i}-USD") for i in range(n)]
            batched, looped = [], []
            for r in range(ROUNDS):
                issued = utc_from_unix(t_base + 300 * (2 * r + 1000 * n))
                jobs = [
                    Job(k, serving, windows[(r * n + i) % len(windows)], issued, Decimal("1"), time.monotonic())
                    for i, k in enumerate(keys)
                ]
                # the live path: one predict_on_batch for every series, one transaction
                t0 = time.perf_counter()
                flog.write(store_new_forecasts(db, forecast_batch(jobs, lambda k: k.step)))
                batched.append(time.perf_counter() - t0)
                # the naive path: model.predict per series, stored one by one
                issued2 = issued + timedelta(minutes=5)
                t0 = time.perf_counter()
                for j in jobs:
                    x = model.featurizer.inputs(j.window[None, -data.window :, 3:4])
                    y = model.net.predict(x, verbose=0)
                    closes = model.featurizer.prices(y, j.window[None, -data.window :, 3:4])[0]
                    f = Forecast(
                        j.series,
                        issued2,
                        "bench-lstm",
                        tuple(issued2 + timedelta(minutes=5 * (s + 1)) for s in range(16)),
                        tuple(float(c) for c in closes),
                    )
                    flog.write(store_new_forecasts(db, [f]))
                looped.append(time.perf_counter() - t0)
            b = statistics.median(batched[1:]) * 1000  # first round: tracing/warm-up
            lo = statistics.median(looped[1:]) * 1000
            print(f"{n:>7} {b:>11.1f} {lo:>18.1f} {lo / b:>6.1f}x")
        db.close()


if __name__ == "__main__":
    main()
