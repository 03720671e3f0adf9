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
from trainer.calibration import Calibrator, calibrate_walk_forward
from trainer.challenger import COVERAGE_BAND, select
from trainer.metrics import HorizonMetrics, horizon_metrics
from trainer.models import BASELINES, CLIMATOLOGY, PERSISTENCE, Forecaster, build_model
from trainer.params import FEATURE_COLUMNS, DataParams, TrainParams
from trainer.quantiles import Prediction, level_name, quantile_scores
from trainer.splits import SplitIndex, Splits, split_windows, strided
from trainer.windows import BarArray, WindowSet, window_set


@dataclass(frozen=True, slots=True)
class Backtest:
    origin_times: np.ndarray
    last_close: np.ndarray
    actual: np.ndarray
    predictions: dict[str, Prediction]
    metrics: dict[str, HorizonMetrics]
    forecasts_per_second: dict[str, float]
    step_s: int = 0

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


def model_samples(samples: WindowSet, model: Forecaster) -> WindowSet:
    """The same origins with only the bar columns `model` reads."""
    if samples.features == model.features:
        return samples
    cols = _columns(model, samples.features)
    bars = samples.bars
    return WindowSet(
        BarArray(bars.times, bars.values[:, cols], model.features, bars.step),
        samples.origins,
        samples.window,
        samples.horizon,
    )


def refit_on_history(model: Forecaster, bars: BarArray, upto: int, params: TrainParams, val_frac: float = 0.1) -> None:
    """Re-train `model` on bars `[0, upto]` (chronological train/validation cut, nothing later)."""
    samples = model_samples(window_set(bars.slice(0, upto + 1), model.window, model.horizon), model)
    n = upto + 1
    splits = split_windows(samples, SplitIndex(int(n * (1 - val_frac)), n, n))
    model.fit(strided(splits.train, params.stride), splits.val, params)


def _score(
    backtest_preds: dict[str, Prediction], actual: np.ndarray, last_close: np.ndarray
) -> dict[str, HorizonMetrics]:
    point = {name: horizon_metrics(p.point, actual, last_close) for name, p in backtest_preds.items()}
    scores = {
        name: quantile_scores(p.quantiles, actual, p.levels)
        for name, p in backtest_preds.items()
        if p.quantiles.shape[2] > 0
    }
    ref = scores[CLIMATOLOGY].pinball_mean if CLIMATOLOGY in scores else None
    return {name: point[name].with_quantiles(scores[name], ref) if name in scores else point[name] for name in point}


def walk_forward(
    models: Mapping[str, Forecaster],
    samples: WindowSet,
    *,
    batch_size: int = 2048,
    refit_every: int | None = None,
    refit_params: TrainParams | None = None,
    calibrators: Mapping[str, Calibrator] | None = None,
) -> Backtest:
    """Forecast at every origin of `samples` with every model and score them.

    `samples` must carry every feature any model uses and a window at least as long as the
    longest model window; each model gets its own columns and the tail of the window.
    Quantiles are served through each model's `Calibrator` (adaptive conformal inference,
    updated only with outcomes that had closed before each origin, as the daemon does; pass
    `calibrators` to carry their state in and out, e.g. from the validation split into the
    test split). Persistence is always scored (as "persistence") as the point reference;
    probabilistic skill is measured against "climatology" when it is among the models.
    """
    if not models:
        raise InputError("walk-forward: no models given")
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
    if PERSISTENCE not in models:  # the point reference, with its random-walk fan
        first = next(iter(models.values()))
        models = {
            **models,
            PERSISTENCE: build_model(
                PERSISTENCE,
                first.params,
                DataParams(window=samples.window, horizon=samples.horizon, features=("close",)),
            ),
        }
    cols = {name: _columns(m, samples.features) for name, m in models.items()}
    close_col = samples.features.index("close")
    n, horizon = len(samples), samples.horizon
    origins = samples.origins
    times = samples.origin_times()
    if refit_every:
        block = (origins - origins[0]) // refit_every
        bounds = np.flatnonzero(np.diff(block)) + 1
        blocks = np.split(np.arange(n), bounds)
    else:
        blocks = [np.arange(n)]
    points = {name: np.empty((n, horizon)) for name in models}
    quants = {name: np.empty((n, horizon, len(m.levels))) for name, m in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    actual = np.empty((n, horizon))
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
                p = m.predict_batch(x, times[idx])
                seconds[name] += time.perf_counter() - t0
                points[name][idx], quants[name][idx] = p.point, p.quantiles
    step_s = int(samples.bars.step)
    preds: dict[str, Prediction] = {}
    for name, m in models.items():
        cal = calibrators.get(name) if calibrators is not None else None
        if cal is None:
            cal = Calibrator(m.levels, horizon, m.params.aci_gamma)
        served = calibrate_walk_forward(cal, times, step_s, last_close, quants[name], actual)
        preds[name] = Prediction(points[name], served, m.levels)
    fps = {name: (n / s if s > 0 else float("inf")) for name, s in seconds.items()}
    return Backtest(times, last_close, actual, preds, _score(preds, actual, last_close), fps, step_s)


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


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Validation and test backtests of the same fitted models, and the model promotion would
    choose from the validation split alone (`selected`)."""

    validation: Backtest | None
    test: Backtest
    selected: str | None
    metric: str
    band: tuple[float, float]


def evaluate_splits(
    models: Mapping[str, Forecaster],
    splits: Splits,
    *,
    test_stride: int = 1,
    refit_every: int | None = None,
    refit_params: TrainParams | None = None,
    metric: str = "pinball",
    band: tuple[float, float] = COVERAGE_BAND,
) -> Evaluation:
    """Walk-forward over the validation split, then the test split, with one calibrator per
    model carried from one into the other (as a daemon serving since the end of training
    would have it); selection looks at the validation split only."""
    calibrators = {name: Calibrator(m.levels, m.horizon, m.params.aci_gamma) for name, m in models.items()}
    val = walk_forward(models, splits.val, calibrators=calibrators) if len(splits.val) else None
    test = walk_forward(
        models,
        strided(splits.test, test_stride),
        refit_every=refit_every,
        refit_params=refit_params,
        calibrators=calibrators,
    )
    selected = select({k: v for k, v in val.metrics.items() if k in models}, metric=metric, band=band) if val else None
    return Evaluation(val, test, selected, metric, band)


ROW_METRICS: tuple[str, ...] = ("mae", "rmse", "mase", "skill", "pinball", "coverage", "width", "prob_skill")


def metrics_rows(backtest: Backtest, steps: tuple[int, ...] = (1, 4, 16)) -> list[dict[str, Any]]:
    """One row per model: averages of the main metrics and MAE at a few horizon steps."""
    rows = []
    order = sorted(backtest.metrics, key=lambda k: (k != PERSISTENCE, backtest.metrics[k].average("mae") or 0))
    for name in order:
        m = backtest.metrics[name]
        row: dict[str, Any] = {"model": name, "n": m.n}
        for metric in ROW_METRICS:
            row[metric] = m.average(metric)
        for k in steps:
            if k <= m.horizon:
                row[f"mae@{k}"] = m.mae[k - 1]
        rows.append(row)
    return rows


PREDICTION_COLUMNS: tuple[str, ...] = (
    "model",
    "origin_time",
    "step",
    "target_time",
    "last_close",
    "actual",
    "point",
)


def prediction_rows(backtest: Backtest) -> tuple[list[str], list[list[Any]]]:
    """Every forecast of every model, one row per model × origin × step (the CSV export)."""
    levels = sorted({lv for p in backtest.predictions.values() for lv in p.levels})
    header = [*PREDICTION_COLUMNS, *(level_name(lv) for lv in levels)]
    rows: list[list[Any]] = []
    iso = np.datetime_as_string(backtest.origin_times.astype("datetime64[s]"), unit="s")
    horizon = backtest.actual.shape[1]
    target = [
        np.datetime_as_string((backtest.origin_times + k * backtest.step_s).astype("datetime64[s]"), unit="s")
        for k in range(1, horizon + 1)
    ]
    for name, p in backtest.predictions.items():
        col = [p.levels.index(lv) if lv in p.levels else None for lv in levels]
        for i in range(backtest.n):
            for k in range(horizon):
                q = p.quantiles[i, k]
                rows.append(
                    [
                        name,
                        f"{iso[i]}Z",
                        k + 1,
                        f"{target[k][i]}Z",
                        repr(float(backtest.last_close[i])),
                        repr(float(backtest.actual[i, k])),
                        repr(float(p.point[i, k])),
                        *("" if c is None else repr(float(q[c])) for c in col),
                    ]
                )
    return header, rows


def _model_colours(names: list[str]) -> dict[str, str]:
    """A colour per model, the same in every panel: the references black (persistence) and grey
    (climatology), the others from matplotlib's qualitative cycle in order of appearance."""
    from itertools import cycle

    palette = cycle(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                     "tab:olive", "tab:cyan"])
    out = {PERSISTENCE: "black", CLIMATOLOGY: "grey"}
    for name in names:
        if name not in out:
            out[name] = next(palette)
    return out


def plot_backtest(
    backtest: Backtest,
    bars: BarArray,
    path: str | Path,
    *,
    fans: int = 3,
    context: int = 48,
    fan_model: str | None = None,
) -> Path:
    """PNG: MAE, central-interval coverage and probabilistic skill by horizon step per model,
    and a few forecast fans (shaded central interval and median of `fan_model`, default the
    best by mean pinball) against the real closes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    probabilistic = {k: m for k, m in backtest.metrics.items() if m.coverage is not None}
    if fan_model is None and probabilistic:
        fan_model = min(
            (k for k in probabilistic if k != CLIMATOLOGY),
            key=lambda k: probabilistic[k].average("pinball") or 0.0,
            default=None,
        )
    fig, axes = plt.subplots(3 + fans, 1, figsize=(10, 3.0 * (3 + fans)))
    steps = np.arange(1, backtest.actual.shape[1] + 1)
    ax0, ax1, ax2 = axes[0], axes[1], axes[2]
    colour = _model_colours([*backtest.metrics, *backtest.predictions])  # one per model, in every panel
    for name, m in backtest.metrics.items():
        ax0.plot(steps, m.mae, "--" if name == PERSISTENCE else "-", color=colour[name], marker=".", label=name)
    ax0.set_xlabel("horizon step (bars)")
    ax0.set_ylabel("MAE (price units)")
    ax0.set_title(f"walk-forward MAE by horizon, {backtest.n} origins")
    ax0.legend(fontsize=8, ncol=3)
    nominal = None
    for name, m in probabilistic.items():
        assert m.coverage is not None and m.levels is not None
        nominal = m.levels[-1] - m.levels[0]
        ax1.plot(steps, np.asarray(m.coverage) * 100, "-", color=colour[name], marker=".", label=name)
        if m.prob_skill is not None and name != CLIMATOLOGY:
            ax2.plot(steps, np.asarray(m.prob_skill) * 100, "-", color=colour[name], marker=".", label=name)
    if nominal is not None:
        ax1.axhline(nominal * 100, color="k", lw=0.8, ls="--", label=f"nominal {nominal:.0%}")
    ax1.set_xlabel("horizon step (bars)")
    ax1.set_ylabel("central-interval coverage (%)")
    ax1.set_title("coverage of the central interval (closer to nominal is better)")
    ax1.legend(fontsize=8, ncol=3)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlabel("horizon step (bars)")
    ax2.set_ylabel("pinball skill vs climatology (%)")
    ax2.set_title("probabilistic skill: 1 - pinball / pinball(climatology) (above 0 beats it)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8, ncol=3)
    picks: list[int] = np.linspace(0, backtest.n - 1, fans).astype(int).tolist() if backtest.n else []
    horizon = backtest.actual.shape[1]
    for ax, i in zip(axes[3:], picks, strict=False):
        o = int(np.searchsorted(bars.times, backtest.origin_times[i]))
        lo = max(0, o - context + 1)
        hist_x = np.arange(lo - o, 1)
        ax.plot(hist_x, bars.close[lo : o + 1], "k-", label="observed")
        fut_x = np.arange(1, horizon + 1)
        ax.plot(fut_x, backtest.actual[i], "k.-", label="realised")
        if fan_model is not None:
            fp = backtest.predictions[fan_model]
            q = fp.quantiles[i]
            ax.fill_between(
                fut_x,
                q[:, 0],
                q[:, -1],
                alpha=0.25,
                color=colour[fan_model],
                label=f"{fan_model} {level_name(fp.levels[0])}–{level_name(fp.levels[-1])}",
            )
            if 0.5 in fp.levels:
                ax.plot(fut_x, q[:, fp.levels.index(0.5)], "--", color=colour[fan_model], label=f"{fan_model} median")
        for name, p in backtest.predictions.items():
            if name not in (PERSISTENCE, CLIMATOLOGY, fan_model):
                ax.plot(fut_x, p.point[i], "-", color=colour[name], alpha=0.8, label=f"{name} point")
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
