"""Probabilistic forecasts on the full real 5-minute BTC file, default split (issue 11's figures).

    python bench/probabilistic.py [CSV] [--networks]

Fits har, linear, drift, persistence and climatology (with --networks also lstm, gru, cnn2-4
for a few epochs) on the training split, walks forward over validation then test with online
calibration carried across, and prints per step: probabilistic skill vs climatology, central
coverage and point skill vs persistence of the model selected on the validation split, plus
the mean figures of every model. Nothing is asserted: this prints what a test cannot time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.datasets import load_bars, read_csv_frame
from trainer.evaluation import evaluate_splits
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.training import fit_on_splits, make_splits

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv"


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    csv = Path(args[0]) if args else DEFAULT
    archs = ["har", "linear", "drift", "persistence", "climatology"]
    if "--networks" in sys.argv:
        archs += ["lstm", "gru", "cnn2", "cnn3", "cnn4"]
    data = DataParams(features=("high", "low", "close", "volume"))
    bars = load_bars(read_csv_frame(csv), data.features)
    splits = make_splits(bars, data)
    point_data = DataParams()
    tp = TrainParams(epochs=5, patience=2, batch_size=256, stride=4)
    models = {}
    for arch in archs:
        t0 = time.perf_counter()
        models[arch] = fit_on_splits(arch, splits, data=point_data, model_params=ModelParams(), train=tp)[0]
        print(f"fit {arch:12s} {time.perf_counter() - t0:6.1f} s", flush=True)
    t0 = time.perf_counter()
    ev = evaluate_splits(models, splits)
    bt = ev.test
    print(f"walk-forward (validation {len(splits.val):,} + test {bt.n:,} origins) {time.perf_counter() - t0:.1f} s")
    print(f"\nselected on the validation split: {ev.selected}\n")
    cols = ("pinball", "prob skill", "skill 9-16", "coverage", "width", "MASE max")
    print(f"{'model':12s} " + " ".join(f"{c:>10s}" for c in cols))
    nan = float("nan")
    for name, m in sorted(bt.metrics.items(), key=lambda kv: kv[1].average("pinball") or 1e9):
        ps = np.asarray(m.prob_skill) if m.prob_skill is not None else None
        values = (
            m.average("pinball") or nan,
            ps.mean() if ps is not None else nan,
            ps[8:].mean() if ps is not None else nan,
            m.average("coverage") or nan,
            m.average("width") or nan,
            max(m.mase),
        )
        print(f"{name:12s} " + " ".join(f"{v:10.4f}" for v in values))
    if ev.selected is None:
        return
    sel = bt.metrics[ev.selected]
    assert sel.prob_skill is not None and sel.coverage is not None
    print(f"\n{ev.selected} per step:\nstep  prob_skill  coverage  point_skill(MAE)")
    for k in range(sel.horizon):
        print(f"{k + 1:4d}  {sel.prob_skill[k]:10.4f}  {sel.coverage[k]:8.3f}  {1 - sel.mase[k]:16.5f}")
    ps, cov = np.asarray(sel.prob_skill), np.asarray(sel.coverage)
    checks = {
        "prob skill >= 3 % averaged over steps 9-16": ps[8:].mean() >= 0.03,
        "prob skill > 0 at every step": bool(np.all(ps > 0)),
        "coverage within 0.78-0.82 at every step": bool(np.all((cov >= 0.78) & (cov <= 0.82))),
        "point skill >= -0.001 at every step": bool(np.all(1 - np.asarray(sel.mase) >= -0.001)),
    }
    print()
    for text, ok in checks.items():
        print(f"{'met    ' if ok else 'NOT met'}  {text}")


if __name__ == "__main__":
    main()
