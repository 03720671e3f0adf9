"""Training throughput (windows/s) of our pipeline vs the study's recipe on the same model and data.

Ours: zero-copy windows featurized batch by batch through a `keras.utils.PyDataset`, batch 64
(TrainParams default). Study: PastSampler-materialised arrays, MinMax fit on everything, `model.fit`
on numpy arrays with batch 8. Same LSTM (50 units, window 256, horizon 16), same number of windows;
the second epoch is timed so compilation is excluded.

    python bench/train_throughput.py [N_WINDOWS] [CSV]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datasets import csv_bars
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.windows import materialised_windows, window_set

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"


def epoch_timer() -> Any:
    import keras

    class Timer(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self._t)

    return Timer()


def main() -> None:
    import keras

    from trainer.batches import FeatureBatches
    from trainer.features import fit_featurizer
    from trainer.models import build_network

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_CSV
    bars = csv_bars(path, ("close",))
    data, params = DataParams(), ModelParams()

    # ours
    samples = window_set(bars, 256, 16).subset(np.s_[:n])
    feat = fit_featurizer(
        [samples.batch(np.arange(len(samples)))],
        features=data.features,
        target=data.target,
        scaler=data.scaler,
        window=256,
        horizon=16,
    )
    keras.utils.set_random_seed(1)
    net = build_network("lstm", params, data)
    net.compile(optimizer="adam", loss="mse")
    timer = epoch_timer()
    bs = TrainParams().batch_size
    net.fit(FeatureBatches(samples, feat, bs, shuffle=True), epochs=2, verbose=0, callbacks=[timer])
    ours = n / timer.times[-1]

    # the study's recipe
    lo, hi = bars.close.min(), bars.close.max()  # MinMax on the whole series (the study's leak)
    x, y = materialised_windows((bars.values[: n + 271] - lo) / (hi - lo), 256, 16)
    keras.utils.set_random_seed(1)
    study = build_network("lstm", ModelParams(output_activation="leaky_relu"), DataParams(target="price"))
    study.compile(optimizer="adam", loss="mse")
    timer2 = epoch_timer()
    study.fit(
        x.astype(np.float32),
        y[:, :, 0].astype(np.float32),
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[timer2],
        shuffle=True,
    )
    theirs = n / timer2.times[-1]
    print(f"LSTM(50) 256→16, {n:,} windows, backend {keras.config.backend()}")
    print(f"ours  (views + PyDataset, batch {bs}): {ours:9.1f} windows/s")
    print(f"study (materialised arrays, batch 8):  {theirs:9.1f} windows/s")
    print(f"ratio ours / study: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
