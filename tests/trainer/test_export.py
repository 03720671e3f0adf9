from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from trainer.datasets import h5_splits, load_bars
from trainer.export import export_h5
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.training import train_from_h5
from trainer.windows import window_set

DATA = DataParams(window=96, horizon=4, features=("close", "volume"))


def test_export_layout_and_chunked_training(gap_frame: pd.DataFrame, tmp_path: Path) -> None:
    bars = load_bars(gap_frame, DATA.features)
    out = tmp_path / "btc.h5"
    n = export_h5(bars, out, DATA, series="binance:BTC-USDT:5m", chunk_rows=300)
    samples = window_set(bars, 96, 4)
    assert n == len(samples)
    with h5py.File(out, "r") as f:
        assert f["inputs"].shape == (n, 96, 2) and f["outputs"].shape == (n, 4, 2)
        assert f["inputs"].chunks is not None
        assert list(f.attrs["features"]) == ["close", "volume"] and f.attrs["series"] == "binance:BTC-USDT:5m"
        assert json.loads(f.attrs["scaler"])["input_scaler"]["kind"] == "minmax"
        raw, future = samples.batch(np.array([0, n // 2, n - 1]))
        np.testing.assert_array_equal(f["inputs"][[0, n // 2, n - 1]], raw)
        np.testing.assert_array_equal(f["outputs"][[0, n // 2, n - 1], :, 0], future)
        np.testing.assert_array_equal(f["origin_time"][:], bars.times[samples.origins])
    tr, va, te = h5_splits(out, 0.7, 0.1)
    assert tr.stop <= va.start and va.stop <= te.start and len(tr) and len(va) and len(te)
    step = 300
    with h5py.File(out, "r") as f:
        origin = f["origin_time"][:]
    assert origin[tr.stop - 1] + 4 * step < origin[va.start] + step  # no training target in validation time
    result = train_from_h5(out, "cnn3", data=DATA, model_params=ModelParams(cnn_filters=4),
                           train=TrainParams(epochs=1, batch_size=64))
    assert result.model.meta["metrics"]["test"]["n"] == len(te)
    assert result.model.predict_batch(raw).quantiles.shape == (3, 4, 3)
