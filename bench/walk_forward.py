"""Walk-forward forecasts/s per model on the test split of the 65k-bar file (batched
`predict_batch`), plus batched vs one-origin-at-a-time for the LSTM.

    python bench/walk_forward.py [CSV]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from trainer.datasets import csv_bars
from trainer.evaluation import walk_forward
from trainer.params import DataParams, TrainParams
from trainer.training import fit_on_splits, make_splits

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    data = DataParams()
    bars = csv_bars(path, data.features)
    splits = make_splits(bars, data)
    tp = TrainParams(epochs=1, batch_size=256, stride=16)
    models = {
        a: fit_on_splits(a, splits, data=data, train=tp)[0]
        for a in ("lstm", "gru", "cnn2", "cnn3", "cnn4", "linear", "persistence", "drift")
    }
    walk_forward(models, splits.test.subset(np.s_[:2048]))  # warm-up: traces for the batch shapes
    t0 = time.perf_counter()
    bt = walk_forward(models, splits.test)
    total = time.perf_counter() - t0
    print(f"{bt.n:,} test origins, {len(models)} models, {total:.1f}s wall for the whole backtest")
    for name, fps in sorted(bt.forecasts_per_second.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12s} {fps:12,.0f} forecasts/s")
    lstm = models["lstm"]
    raw, _ = splits.test.batch(np.arange(256))
    t0 = time.perf_counter()
    lstm.predict_batch(raw)
    batched = 256 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(256):
        lstm.predict_batch(raw[i : i + 1])
    single = 256 / (time.perf_counter() - t0)
    print(f"lstm: batched {batched:,.0f}/s vs one origin per call {single:,.0f}/s: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
