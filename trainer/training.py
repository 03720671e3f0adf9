"""Train one model end to end: bars → windows → chronological splits → fit → walk-forward
test score, with everything the artifact manifest needs recorded on the model.

This is what `barcast train`, `barcast evaluate` and the live loop's retraining job call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from db.errors import InputError
from trainer.artifacts import data_fingerprint
from trainer.datasets import h5_splits, load_bars
from trainer.evaluation import Backtest, model_samples, walk_forward
from trainer.models import FitReport, Forecaster, build_model, model_features
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.splits import SplitIndex, Splits, split_by_fraction, split_windows, strided
from trainer.windows import BarArray, window_set


@dataclass(frozen=True, slots=True)
class TrainResult:
    model: Forecaster
    report: FitReport
    splits: Splits | None
    test: Backtest | None


def _iso(unix: int) -> str:
    return pd.Timestamp(int(unix), unit="s", tz="UTC").isoformat()


def make_splits(bars: BarArray, data: DataParams, *, holdout_bars: int | None = None) -> Splits:
    """Samples of `bars` cut by time: by the data fractions, or, with `holdout_bars`, the last
    `holdout_bars` bars as the test split (validation: `val_frac` of what is before)."""
    samples = window_set(bars, data.window, data.horizon)
    if holdout_bars is None:
        return split_by_fraction(samples, data.train_frac, data.val_frac)
    splits = split_windows(samples, SplitIndex.holdout(len(bars), holdout_bars, data.val_frac))
    if len(splits.train) == 0:
        raise InputError(f"no training windows before the last {holdout_bars} bars")
    return splits


def fit_on_splits(
    arch: str,
    splits: Splits,
    *,
    model_params: ModelParams | None = None,
    data: DataParams | None = None,
    train: TrainParams | None = None,
    log_csv: Path | None = None,
    progress: bool = False,
    series: str | None = None,
) -> tuple[Forecaster, FitReport]:
    """Fit `arch` on the training split (validation for early stopping) and record on
    `model.meta` the training range, data fingerprint and parameters."""
    data = data or DataParams()
    train = train or TrainParams()
    model = build_model(arch, model_params, data)
    train_set = model_samples(strided(splits.train, train.stride), model)
    val_set = model_samples(splits.val, model)
    report = model.fit(train_set, val_set, train, log_csv=log_csv, progress=progress)
    bars = splits.train.bars
    first = int(splits.train.origins[0]) - data.window + 1
    last = int(splits.train.origins[-1]) + data.horizon
    model.meta = {
        "series": series,
        "training": {
            "start": _iso(bars.times[first]),
            "end": _iso(bars.times[last]),
            "bars": last - first + 1,
            "samples": len(train_set),
            "validation_samples": len(splits.val),
            "fingerprint": data_fingerprint(bars.times[first : last + 1], bars.values[first : last + 1]),
        },
        "train": asdict(train),
        "fit": report.to_dict(),
    }
    return model, report


def score_on_test(model: Forecaster, splits: Splits, *, stride: int = 1) -> Backtest:
    """Walk-forward on the test split; stores the model's and persistence's metrics in its meta."""
    bt = walk_forward({model.arch: model}, strided(splits.test, stride))
    model.meta["metrics"] = {
        "test": bt.metrics[model.arch].to_dict(),
        "persistence": bt.metrics["persistence"].to_dict(),
        "test_start": _iso(int(bt.origin_times[0])),
        "test_end": _iso(int(bt.origin_times[-1])),
    }
    return bt


def train_from_frame(
    frame: pd.DataFrame,
    arch: str,
    *,
    data: DataParams | None = None,
    model_params: ModelParams | None = None,
    train: TrainParams | None = None,
    holdout_bars: int | None = None,
    evaluate: bool = True,
    test_stride: int = 1,
    log_csv: Path | None = None,
    progress: bool = False,
    series: str | None = None,
) -> TrainResult:
    """Train `arch` on a `db.bars.bars_frame` frame (or a CSV read by `read_csv_frame`).

    With `holdout_bars` the last bars are left out of training and scored walk-forward
    (the live loop's challenger); otherwise the data fractions decide the splits.
    """
    data = data or DataParams()
    bars = load_bars(frame, model_features(arch, data), fill_gaps=data.fill_gaps, source=series or "bars")
    splits = make_splits(bars, data, holdout_bars=holdout_bars)
    model, report = fit_on_splits(
        arch,
        splits,
        model_params=model_params,
        data=data,
        train=train,
        log_csv=log_csv,
        progress=progress,
        series=series,
    )
    bt = score_on_test(model, splits, stride=test_stride) if evaluate and len(splits.test) else None
    return TrainResult(model, report, splits, bt)


def train_from_h5(
    path: str | Path,
    arch: str,
    *,
    data: DataParams | None = None,
    model_params: ModelParams | None = None,
    train: TrainParams | None = None,
    log_csv: Path | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train from an HDF5 export read in chunks (never loaded whole). Window, horizon and
    features come from the file; `data` supplies target, scaler and split fractions."""
    import h5py

    data = data or DataParams()
    train = train or TrainParams()
    tr, va, te = h5_splits(path, data.train_frac, data.val_frac)
    if len(tr) == 0:
        raise InputError(f"{path}: no training rows")
    data = DataParams(**{**asdict(data), "window": tr.window, "horizon": tr.horizon, "features": tr.features})
    model = build_model(arch, model_params, data)
    report = model.fit(tr, va, train, log_csv=log_csv, progress=progress)
    with h5py.File(path, "r") as f:
        origin = np.asarray(f["origin_time"][[0, tr.stop - 1]])
        series = str(f.attrs.get("series", ""))
    model.meta = {
        "series": series or None,
        "training": {
            "start": _iso(int(origin[0])),
            "end": _iso(int(origin[1])),
            "samples": len(tr),
            "source": str(path),
        },
        "train": asdict(train),
        "fit": report.to_dict(),
    }
    if len(te):
        from trainer.datasets import iter_batches
        from trainer.metrics import horizon_metrics

        if model.needs_times:
            raise InputError(f"{path}: {arch} needs bar times, which HDF5 exports do not carry; train from bars")
        preds, actual, last = [], [], []
        for raw, future in iter_batches(te):
            preds.append(model.predict_batch(raw).point)
            actual.append(future)
            last.append(raw[:, -1, data.close_index])
        p, a, c = np.concatenate(preds), np.concatenate(actual), np.concatenate(last)
        model.meta["metrics"] = {
            "test": horizon_metrics(p, a, c).to_dict(),
            "persistence": horizon_metrics(np.repeat(c[:, None], data.horizon, axis=1), a, c).to_dict(),
        }
    for part in (tr, va, te):
        part.close()
    return TrainResult(model, report, None, None)


def describe(result: TrainResult) -> dict[str, Any]:
    return {"arch": result.model.arch, **result.model.meta}
