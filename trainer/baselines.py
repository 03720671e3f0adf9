"""Baselines are models like any other (as in Darts): same interface, same artifacts.

- `persistence`: the last close, with a random-walk fan (the window's 1-bar volatility
  times sqrt(k), scaled by the empirical quantiles of its standardised training residuals);
- `drift`: the last close plus the window's mean change per bar, shrunk toward persistence
  on validation, with the same kind of fan;
- `climatology`: the last close with the unconditional empirical quantiles of the training
  split's k-step log-returns — the reference that probabilistic skill is measured against,
  as persistence is for point forecasts.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from trainer.forecaster import Forecaster
from trainer.params import DataParams, ModelParams


def _gaussian_spread(horizon: int, levels: tuple[float, ...]) -> np.ndarray:
    z = [NormalDist().inv_cdf(tau) for tau in levels]
    return np.tile(np.asarray(z, dtype=np.float64), (horizon, 1))


class Persistence(Forecaster):
    """Tomorrow is today: the last close, repeated.

    Ready before any fit (it serves while the first model trains): until fitted its fan is a
    Gaussian random walk on the window's volatility; fitting replaces z with the empirical
    quantiles of its training residuals.
    """

    shrinks = False

    def __init__(self, arch: str, params: ModelParams, data: DataParams) -> None:
        super().__init__(arch, params, data)
        if self.scaled_spread:
            self.spread = _gaussian_spread(data.horizon, params.quantiles)

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, None]:
        last = raw[:, -1, self.data.close_index]
        return np.repeat(last[:, None], self.horizon, axis=1), None


class Drift(Persistence):
    """The last close plus the window's average change per bar, extended linearly."""

    shrinks = True

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, None]:
        close = raw[:, :, self.data.close_index]
        slope = (close[:, -1] - close[:, 0]) / (self.window - 1)
        return close[:, -1:] + slope[:, None] * np.arange(1, self.horizon + 1), None


class Climatology(Persistence):
    """The last close and the training split's unconditional k-step log-return quantiles."""

    scaled_spread = False


def horizon_log_returns(times: np.ndarray, closes: np.ndarray, horizon: int, step_s: int) -> list[np.ndarray]:
    """The k-step log-returns (k = 1..horizon) of a bar series, only over spans without a
    missing bar: one array per k (what climatology's fan is made of)."""
    t = np.asarray(times, dtype=np.int64)
    lc = np.log(np.asarray(closes, dtype=np.float64))
    out = []
    for k in range(1, horizon + 1):
        ok = t[k:] - t[:-k] == k * step_s if len(t) > k else np.zeros(0, dtype=bool)
        out.append((lc[k:] - lc[:-k])[ok] if len(t) > k else np.zeros(0))
    return out


def climatology_quantiles(
    times: np.ndarray, closes: np.ndarray, horizon: int, step_s: int, levels: tuple[float, ...]
) -> np.ndarray | None:
    """(horizon, levels) unconditional empirical quantiles of the k-step log-returns of a bar
    series: climatology's fan without a model, e.g. the daemon's live reference for
    probabilistic skill. None when some step has no gap-free span."""
    rets = horizon_log_returns(times, closes, horizon, step_s)
    if any(len(r) == 0 for r in rets):
        return None
    return np.stack([np.quantile(r, levels) for r in rets])
