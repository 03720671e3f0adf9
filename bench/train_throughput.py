"""Training throughput (windows/s) of the production path vs the study's recipe, same LSTM, same
machine, one run; and validation loss at equal epochs, so the speed is not bought with accuracy.

- ours: what `KerasForecaster` trains with (`trainer.models.compile_network` + `WindowBatches`):
  the bar array featurized once, windows as zero-copy views, `TrainParams()` defaults (batch 512,
  Adam at the batch-scaled rate, XLA where the backend has it, several steps per compiled call).
- study: PastSampler-materialised arrays, MinMax fit on everything, `fit` on numpy arrays with
  batch 8 and Adam 1e-3 (Keras' default jit setting, one step per call).
- quality reference: our log-return targets trained with the study's optimisation (batch 8,
  Adam 1e-3); its validation loss and ours are on the same targets, so they compare.

Same network per row (the study's LSTM / GRU with 50 units, its CNN2; window 256, horizon 16,
point + quantile heads, point + pinball loss); the fastest epoch after the first is timed, so
compilation is excluded, and the two recipes alternate epoch by epoch, so a burst of other load
on a shared machine slows an epoch of each side rather than one whole side.

    python bench/train_throughput.py [N_WINDOWS] [EPOCHS] [ARCHS] [CSV]
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


def measure(arch: str, n: int, epochs: int, bars: Any) -> dict[str, float]:
    """windows/s of ours and the study's recipe, and both validation losses, for one network.

    The two recipes train in alternation, one epoch each per round, and each keeps its fastest
    epoch after its first (which compiles): a burst of other load on the shared machine then
    slows one epoch of each side, not a whole side, so it cannot tilt the ratio."""
    import keras

    from trainer.batches import PointQuantileLoss, WindowBatches
    from trainer.features import fit_featurizer
    from trainer.forecaster import timed_batches
    from trainer.models import build_network, compile_network

    data, params = DataParams(), ModelParams()
    samples = window_set(bars, data.window, data.horizon)
    train, val = samples.subset(np.s_[:n]), samples.subset(np.s_[n : n + n // 4])
    feat = fit_featurizer(
        timed_batches(train, False),
        features=data.features,
        target=data.target,
        scaler=data.scaler,
        window=data.window,
        horizon=data.horizon,
    )

    def ours_net(tp: TrainParams) -> Any:
        keras.utils.set_random_seed(1)
        net = build_network(arch, params, data)
        compile_network(net, params.quantiles, tp)
        return net

    tp = TrainParams()
    ours = ours_net(tp)
    ours_data = WindowBatches(train, feat, tp.batch_size, shuffle=True, seed=1)
    # the study's recipe: MinMax on the whole series (its leak), PastSampler arrays, batch 8
    lo, hi = bars.close.min(), bars.close.max()
    x, y = materialised_windows((bars.values[: n + data.window + data.horizon - 1] - lo) / (hi - lo), 256, 16)
    x, y = x.astype(np.float32), y[:, :, 0].astype(np.float32)
    keras.utils.set_random_seed(1)
    study = build_network(arch, ModelParams(output_activation="leaky_relu"), DataParams(target="price"))
    study.compile(optimizer=keras.optimizers.Adam(learning_rate=STUDY_LR), loss=PointQuantileLoss(params.quantiles))
    ours_t, study_t = epoch_timer(), epoch_timer()
    for _ in range(epochs):
        ours.fit(ours_data, epochs=1, verbose=0, callbacks=[ours_t])
        study.fit(x, y, batch_size=STUDY_BATCH, epochs=1, verbose=0, callbacks=[study_t], shuffle=True)
    ours_val = float(ours.evaluate(WindowBatches(val, feat, tp.batch_size), verbose=0, return_dict=True)["loss"])

    # quality reference: the study's optimisation (batch 8, Adam 1e-3) on our targets
    ref_lr = STUDY_LR * REFERENCE_BATCH / STUDY_BATCH
    ref_tp = TrainParams(batch_size=STUDY_BATCH, learning_rate=ref_lr, steps_per_execution=1)
    ref = ours_net(ref_tp)
    h = ref.fit(
        WindowBatches(train, feat, ref_tp.batch_size, shuffle=True, seed=1),
        validation_data=WindowBatches(val, feat, tp.batch_size),
        epochs=epochs,
        verbose=0,
    )
    return {
        "ours": n / min(ours_t.times[1:]),
        "study": n / min(study_t.times[1:]),
        "ours_val": ours_val,
        "ref_val": float(h.history["val_loss"][-1]),
    }


def main() -> None:
    import keras

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    epochs = max(2, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    archs = sys.argv[3].split(",") if len(sys.argv) > 3 else ["lstm", "gru", "cnn2"]
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else DEFAULT_CSV
    bars = csv_bars(path, ("close",))
    tp = TrainParams()
    print(
        f"{n:,} training windows (256 → 16, point + quantile heads), {epochs} epochs, backend "
        f"{keras.config.backend()}; ours: bar array featurized once + window views, batch {tp.batch_size}, "
        f"lr {tp.scaled_learning_rate:.2g}, steps_per_execution {tp.steps_per_execution}; study: PastSampler "
        f"arrays, batch {STUDY_BATCH}, lr {STUDY_LR:g}. Validation loss on {n // 4:,} windows, log-return "
        f"targets, after {epochs} epochs: ours vs the study's batch {STUDY_BATCH} / lr {STUDY_LR:g}.",
        flush=True,
    )
    print(f"{'model':6} {'ours w/s':>9} {'study w/s':>9} {'ratio':>7}   {'val ours':>8} {'val b8':>8}", flush=True)
    for arch in archs:
        m = measure(arch, n, epochs, bars)
        verdict = "not worse" if m["ours_val"] <= m["ref_val"] else "WORSE"
        print(
            f"{arch:6} {m['ours']:9.1f} {m['study']:9.1f} {m['ours'] / m['study']:6.2f}x   "
            f"{m['ours_val']:8.4f} {m['ref_val']:8.4f} {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
