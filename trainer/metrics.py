"""Forecast errors per horizon step, in price units. Pure numpy.

Definitions (all per step k = 1..H, over the same forecast origins):
- MAE, RMSE in price units; MAPE in percent of the realised close.
- MASE here is scaled by persistence on the same origins: MAE_model / MAE_persistence
  (out-of-sample relative MAE; < 1 beats "no change").
- skill = 1 - MSE_model / MSE_persistence (> 0 beats persistence).
- directional: share of origins where the forecast change from the last close has the sign
  of the realised change, over origins whose realised change is non-zero. A forecast of no
  change is never right; a model that never calls a direction (persistence) gets None.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trainer.quantiles import QuantileScores, level_name, probabilistic_skill

METRIC_NAMES: tuple[str, ...] = ("mae", "rmse", "mape", "mase", "skill", "directional")
#: Probabilistic metrics per step (see `trainer.quantiles`); None for a point-only model.
#: `prob_skill` = 1 - pinball / pinball(climatology) on the same origins.
PROB_METRIC_NAMES: tuple[str, ...] = ("pinball", "wis", "coverage", "width", "prob_skill")
ALL_METRICS: tuple[str, ...] = METRIC_NAMES + PROB_METRIC_NAMES


def _tuple(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in a)


@dataclass(frozen=True, slots=True)
class HorizonMetrics:
    n: int
    mae: tuple[float, ...]
    rmse: tuple[float, ...]
    mape: tuple[float, ...]
    mase: tuple[float, ...]
    skill: tuple[float, ...]
    directional: tuple[float, ...] | None
    levels: tuple[float, ...] | None = None
    #: Pinball loss per level (L tuples of H), then the probabilistic metrics per step.
    pinball_levels: tuple[tuple[float, ...], ...] | None = None
    pinball: tuple[float, ...] | None = None
    wis: tuple[float, ...] | None = None
    coverage: tuple[float, ...] | None = None
    width: tuple[float, ...] | None = None
    prob_skill: tuple[float, ...] | None = None

    @property
    def horizon(self) -> int:
        return len(self.mae)

    def per_step(self, name: str) -> tuple[float, ...] | None:
        if name not in ALL_METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(ALL_METRICS)}")
        value: tuple[float, ...] | None = getattr(self, name)
        return value

    def with_quantiles(self, scores: QuantileScores, reference: tuple[float, ...] | None) -> HorizonMetrics:
        """These metrics plus probabilistic ones; `reference` is climatology's mean pinball per step."""
        return replace(
            self,
            levels=scores.levels,
            pinball_levels=scores.pinball,
            pinball=scores.pinball_mean,
            wis=scores.wis,
            coverage=scores.coverage,
            width=scores.width,
            prob_skill=None if reference is None else probabilistic_skill(scores.pinball_mean, reference),
        )

    def average(self, name: str) -> float | None:
        steps = self.per_step(name)
        return None if steps is None else float(np.mean(steps))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n}
        for name in ALL_METRICS:
            steps = self.per_step(name)
            d[name] = None if steps is None else list(steps)
        d["levels"] = None if self.levels is None else list(self.levels)
        d["pinball_levels"] = (
            None
            if self.pinball_levels is None or self.levels is None
            else {level_name(lv): list(v) for lv, v in zip(self.levels, self.pinball_levels, strict=True)}
        )
        d["mean"] = {name: self.average(name) for name in ALL_METRICS}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HorizonMetrics:
        def steps(name: str) -> tuple[float, ...]:
            return tuple(float(v) for v in d[name])

        def maybe(name: str) -> tuple[float, ...] | None:
            return None if d.get(name) is None else steps(name)

        levels = None if d.get("levels") is None else tuple(float(v) for v in d["levels"])
        by_level = d.get("pinball_levels")
        return cls(
            int(d["n"]),
            steps("mae"),
            steps("rmse"),
            steps("mape"),
            steps("mase"),
            steps("skill"),
            maybe("directional"),
            levels,
            None
            if by_level is None or levels is None
            else tuple(tuple(float(v) for v in by_level[level_name(lv)]) for lv in levels),
            maybe("pinball"),
            maybe("wis"),
            maybe("coverage"),
            maybe("width"),
            maybe("prob_skill"),
        )


def horizon_metrics(predicted: np.ndarray, actual: np.ndarray, last_close: np.ndarray) -> HorizonMetrics:
    """Errors of forecasts `predicted` (n, H) against realised closes `actual` (n, H) issued at
    origins whose last observed close is `last_close` (n,)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    last = np.asarray(last_close, dtype=np.float64)[:, None]
    if predicted.shape != actual.shape or predicted.ndim != 2 or last.shape[0] != actual.shape[0]:
        raise ValueError(
            f"shapes differ: predicted {predicted.shape}, actual {actual.shape}, last {last.shape}"
        )
    if actual.shape[0] == 0:
        raise ValueError("no forecast origins to score")
    err = predicted - actual
    base = last - actual
    mae = np.abs(err).mean(axis=0)
    mse = (err**2).mean(axis=0)
    base_mae = np.abs(base).mean(axis=0)
    base_mse = (base**2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = np.where(base_mae > 0, mae / base_mae, np.nan)
        skill = np.where(base_mse > 0, 1.0 - mse / base_mse, np.nan)
    mape = (np.abs(err) / np.abs(actual)).mean(axis=0) * 100.0
    real = np.sign(actual - last)
    called = np.sign(predicted - last)
    directional: tuple[float, ...] | None = None
    if np.any(called != 0):
        moved = real != 0
        hits = ((called == real) & moved).sum(axis=0)
        directional = _tuple(hits / np.maximum(moved.sum(axis=0), 1))
    return HorizonMetrics(
        int(actual.shape[0]),
        _tuple(mae),
        _tuple(np.sqrt(mse)),
        _tuple(mape),
        _tuple(mase),
        _tuple(skill),
        directional,
    )
