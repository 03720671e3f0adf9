"""Training throughput (windows/s) of the production path vs the study's recipe, same LSTM, same
machine, one run; and validation loss at equal epochs, so the speed is not bought with accuracy.

- ours: what `KerasForecaster` trains with (`trainer.models.compile_network` + `WindowBatches`):
  the bar array featurized once, windows as zero-copy views, `TrainParams()` defaults (batch 512,
  Adam at the sqrt-scaled rate, XLA where the backend has it, several steps per compiled call).
- study: PastSampler-materialised arrays, MinMax fit on everything, `fit` on numpy arrays with
  batch 8 and Adam 1e-3 (Keras' default jit setting, one step per call).
- quality reference: our log-return targets trained with the study's optimisation (batch 8,
  Adam 1e-3); its validation loss and ours are on the same targets, so they compare.

Same LSTM (50 units, window 256, horizon 16, point + quantile heads, point + pinball loss);
epochs after the first are timed, so compilation is excluded.

    python bench/train_throughput.py [N_WINDOWS] [EPOCHS] [CSV]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datasets import csv_bars
from trainer.params import REFERENCE_BATCH, DataParams, ModelParams, TrainParams
from trainer.windows import materialised_windows, window_set

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"
STUDY_BATCH, STUDY_LR = 8, 1e-3


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

    from trainer.batches import WindowBatches
    from trainer.features import fit_featurizer
    from trainer.forecaster import timed_batches
    from trainer.models import build_network, compile_network

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    epochs = max(2, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    path = Path(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_CSV
    n_val = n // 4
    bars = csv_bars(path, ("close",))
    data, params = DataParams(), ModelParams()
    samples = window_set(bars, data.window, data.horizon)
    train, val = samples.subset(np.s_[:n]), samples.subset(np.s_[n : n + n_val])
    feat = fit_featurizer(
        timed_batches(train, False),
        features=data.features,
        target=data.target,
        scaler=data.scaler,
        window=data.window,
        horizon=data.horizon,
    )

    def run_ours(tp: TrainParams) -> tuple[float, float]:
        keras.utils.set_random_seed(1)
        net = build_network("lstm", params, data)
        compile_network(net, params.quantiles, tp)
        timer = epoch_timer()
        h = net.fit(
            WindowBatches(train, feat, tp.batch_size, shuffle=True, seed=1),
            validation_data=WindowBatches(val, feat, tp.batch_size),
            epochs=epochs,
            verbose=0,
            callbacks=[timer],
        )
        return n / min(timer.times[1:]), float(h.history["val_loss"][-1])

    ours_tp = TrainParams()
    ours, ours_val = run_ours(ours_tp)
    # the study's optimisation on our targets: batch 8, Adam 1e-3, one step per call
    ref_tp = TrainParams(
        batch_size=STUDY_BATCH, learning_rate=STUDY_LR / (STUDY_BATCH / REFERENCE_BATCH) ** 0.5, steps_per_execution=1
    )
    _, ref_val = run_ours(ref_tp)

    # the study's recipe
    from trainer.batches import PointQuantileLoss

    lo, hi = bars.close.min(), bars.close.max()  # MinMax on the whole series (the study's leak)
    x, y = materialised_windows((bars.values[: n + data.window + data.horizon - 1] - lo) / (hi - lo), 256, 16)
    keras.utils.set_random_seed(1)
    study = build_network("lstm", ModelParams(output_activation="leaky_relu"), DataParams(target="price"))
    study.compile(optimizer=keras.optimizers.Adam(learning_rate=STUDY_LR), loss=PointQuantileLoss(params.quantiles))
    timer2 = epoch_timer()
    study.fit(
        x.astype(np.float32),
        y[:, :, 0].astype(np.float32),
        batch_size=STUDY_BATCH,
        epochs=epochs,
        verbose=0,
        callbacks=[timer2],
        shuffle=True,
    )
    theirs = n / min(timer2.times[1:])
    print(f"LSTM(50) 256→16 + quantile heads, {n:,} training windows, {epochs} epochs, backend {keras.config.backend()}")
    print(
        f"ours  (bar array featurized once + window views, PyDataset, batch {ours_tp.batch_size}, "
        f"lr {ours_tp.scaled_learning_rate:.2g}, spe {ours_tp.steps_per_execution}): {ours:9.1f} windows/s"
    )
    print(f"study (PastSampler arrays, batch {STUDY_BATCH}, lr {STUDY_LR:g}):{'':43}{theirs:9.1f} windows/s")
    print(f"ratio ours / study: {ours / theirs:.2f}x")
    print(
        f"validation loss after {epochs} epochs, {n_val:,} windows (log-return targets): "
        f"ours {ours_val:.4f}, study's batch {STUDY_BATCH} / lr {STUDY_LR:g} {ref_val:.4f} "
        f"({'not worse' if ours_val <= ref_val else 'WORSE'})"
    )


if __name__ == "__main__":
    main()
