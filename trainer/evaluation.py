"""Walk-forward (rolling-origin) backtests: every model forecasts at the same origins, in
batches, and is scored per horizon step in price units next to persistence.

A forecast at origin `o` uses bars up to `o` only; with `refit_every = K` each model is
re-trained on everything before the first origin of each block of K bars, so it never
sees the future it is scored on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from db.errors import InputError
from trainer.metrics import METRIC_NAMES, HorizonMetrics, horizon_metrics
from trainer.models import BASELINES, Forecaster
from trainer.params import FEATURE_COLUMNS, TrainParams
from trainer.splits import SplitIndex, split_windows, strided
from trainer.windows import BarArray, WindowSet, window_set

PERSISTENCE = "persistence"


@dataclass(frozen=True, slots=True)
class Backtest:
    origin_times: np.ndarray
    last_close: np.ndarray
    actual: np.ndarray
    predictions: dict[str, np.ndarray]
    metrics: dict[str, HorizonMetrics]
    forecasts_per_second: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.origin_times.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "origins": self.n,
            "first_origin": int(self.origin_times[0]) if self.n else None,
            "last_origin": int(self.origin_times[-1]) if self.n else None,
            "models": {name: m.to_dict() for name, m in self.metrics.items()},
            "forecasts_per_second": dict(self.forecasts_per_second),
        }


def union_features(models: Mapping[str, Forecaster]) -> tuple[str, ...]:
    wanted = {f for m in models.values() for f in m.features}
    return tuple(f for f in FEATURE_COLUMNS if f in wanted)


def _columns(model: Forecaster, features: tuple[str, ...]) -> list[int]:
    try:
        return [features.index(f) for f in model.features]
    except ValueError:
        raise InputError(f"{model.arch} needs features {model.features}, the bars have {features}") from None


def _model_bars(bars: BarArray, model: Forecaster) -> BarArray:
    cols = _columns(model, bars.features)
    return BarArray(bars.times, bars.values[:, cols], model.features, bars.step)


def refit_on_history(
    model: Forecaster, bars: BarArray, upto: int, params: TrainParams, val_frac: float = 0.1
) -> None:
    """Re-train `model` on bars `[0, upto]` (chronological train/validation cut, nothing later)."""
    hist = _model_bars(bars.slice(0, upto + 1), model)
    samples = window_set(hist, model.window, model.horizon)
    n = len(hist)
    splits = split_windows(samples, SplitIndex(int(n * (1 - val_frac)), n, n))
    model.fit(strided(splits.train, params.stride), splits.val, params)


def walk_forward(
    models: Mapping[str, Forecaster],
    samples: WindowSet,
    *,
    batch_size: int = 2048,
    refit_every: int | None = None,
    refit_params: TrainParams | None = None,
) -> Backtest:
    """Forecast at every origin of `samples` with every model and score them.

    `samples` must carry every feature any model uses and a window at least as long as the
    longest model window; each model gets its own columns and the tail of the window.
    Persistence is always scored (under the name "persistence") as the reference.
    """
    if len(samples) == 0:
        raise InputError("walk-forward: no forecast origins (the test period has no gap-free windows)")
    for name, m in models.items():
        if m.horizon != samples.horizon or m.window > samples.window:
            raise InputError(
                f"walk-forward: model {name} ({m.window}→{m.horizon}) does not fit samples "
                f"({samples.window}→{samples.horizon})"
            )
    if refit_every is not None and refit_params is None:
        raise InputError("walk-forward: refit_every needs refit_params")
    cols = {name: _columns(m, samples.features) for name, m in models.items()}
    close_col = samples.features.index("close")
    n = len(samples)
    origins = samples.origins
    if refit_every:
        block = (origins - origins[0]) // refit_every
        bounds = np.flatnonzero(np.diff(block)) + 1
        blocks = np.split(np.arange(n), bounds)
    else:
        blocks = [np.arange(n)]
    preds = {name: np.empty((n, samples.horizon)) for name in models}
    seconds = dict.fromkeys(models, 0.0)
    actual = np.empty((n, samples.horizon))
    last_close = np.empty(n)
    for b, rows in enumerate(blocks):
        if b > 0 and refit_every:
            assert refit_params is not None
            for m in models.values():
                if m.arch not in BASELINES:
                    refit_on_history(m, samples.bars, int(origins[rows[0]]), refit_params)
        for lo in range(0, rows.shape[0], batch_size):
            idx = rows[lo : lo + batch_size]
            raw, future = samples.batch(idx)
            actual[idx] = future
            last_close[idx] = raw[:, -1, close_col]
            for name, m in models.items():
                x = raw[:, -m.window :, cols[name]]
                t0 = time.perf_counter()
                preds[name][idx] = m.predict_batch(x)
                seconds[name] += time.perf_counter() - t0
    metrics = {name: horizon_metrics(p, actual, last_close) for name, p in preds.items()}
    if PERSISTENCE not in metrics:
        persist = np.repeat(last_close[:, None], samples.horizon, axis=1)
        metrics[PERSISTENCE] = horizon_metrics(persist, actual, last_close)
        preds[PERSISTENCE] = persist
    fps = {name: (n / s if s > 0 else float("inf")) for name, s in seconds.items()}
    return Backtest(samples.origin_times(), last_close, actual, preds, metrics, fps)


def evaluate_holdout(
    models: Mapping[str, Forecaster],
    bars: BarArray,
    *,
    holdout_bars: int,
    stride: int = 1,
    batch_size: int = 2048,
) -> Backtest:
    """Score models on the same origins in the last `holdout_bars` bars (every target inside
    them): the champion / challenger / persistence comparison of the live retraining job.

    `bars` must hold every feature the models use (see `union_features`).
    """
    if not models:
        raise InputError("evaluate_holdout: no models given")
    horizons = {m.horizon for m in models.values()}
    if len(horizons) != 1:
        raise InputError(f"evaluate_holdout: models disagree on horizon {sorted(horizons)}")
    window = max(m.window for m in models.values())
    samples = window_set(bars, window, horizons.pop())
    n = len(bars)
    test = split_windows(samples, SplitIndex(n - holdout_bars, n - holdout_bars, n)).test
    return walk_forward(models, strided(test, stride), batch_size=batch_size)


def metrics_rows(backtest: Backtest, steps: tuple[int, ...] = (1, 4, 16)) -> list[dict[str, Any]]:
    """One row per model: averages of every metric and MAE at a few horizon steps."""
    rows = []
    order = sorted(
        backtest.metrics, key=lambda k: (k != PERSISTENCE, backtest.metrics[k].average("mae") or 0)
    )
    for name in order:
        m = backtest.metrics[name]
        row: dict[str, Any] = {"model": name, "n": m.n}
        for metric in METRIC_NAMES:
            row[metric] = m.average(metric)
        for k in steps:
            if k <= m.horizon:
                row[f"mae@{k}"] = m.mae[k - 1]
        rows.append(row)
    return rows


def plot_backtest(
    backtest: Backtest, bars: BarArray, path: str | Path, *, fans: int = 3, context: int = 48
) -> Path:
    """PNG: MAE by horizon step per model, and a few forecast fans against the real closes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1 + fans, 1, figsize=(10, 3.2 * (1 + fans)))
    ax0 = axes[0]
    for name, m in backtest.metrics.items():
        style = "k--" if name == PERSISTENCE else "-"
        ax0.plot(range(1, m.horizon + 1), m.mae, style, marker=".", label=name)
    ax0.set_xlabel("horizon step (bars)")
    ax0.set_ylabel("MAE (price units)")
    ax0.set_title(f"walk-forward MAE by horizon, {backtest.n} origins")
    ax0.legend(fontsize=8, ncol=3)
    picks: list[int] = np.linspace(0, backtest.n - 1, fans).astype(int).tolist() if backtest.n else []
    horizon = backtest.actual.shape[1]
    for ax, i in zip(axes[1:], picks, strict=False):
        o = int(np.searchsorted(bars.times, backtest.origin_times[i]))
        lo = max(0, o - context + 1)
        hist_x = np.arange(lo - o, 1)
        ax.plot(hist_x, bars.close[lo : o + 1], "k-", label="observed")
        fut_x = np.arange(1, horizon + 1)
        ax.plot(fut_x, backtest.actual[i], "k.-", label="realised")
        for name, p in backtest.predictions.items():
            if name != PERSISTENCE:
                ax.plot(fut_x, p[i], "-", alpha=0.8, label=name)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("bars from the forecast origin (0 = last observed bar)")
        ax.set_ylabel("close (price units)")
        ax.set_title(f"forecasts issued at {np.datetime64(int(backtest.origin_times[i]), 's')} UTC")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
