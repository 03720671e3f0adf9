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


class Persistence(Forecaster):
    """Tomorrow is today: the last close, repeated."""

    shrinks = False

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, None]:
        last = raw[:, -1, self.data.close_index]
        return np.repeat(last[:, None], self.horizon, axis=1), None


def random_walk_fan(model: Persistence) -> Persistence:
    """Give an untrained persistence model (the daemon's baseline before any training) the
    Gaussian random-walk fan: the window's 1-bar volatility x sqrt(k) x z_tau. Online
    calibration then corrects its width from the scored forecasts."""
    z = np.array([NormalDist().inv_cdf(level) for level in model.levels])
    model.spread = np.repeat(z[None, :], model.horizon, axis=0)
    return model


class Drift(Forecaster):
    """The last close plus the window's average change per bar, extended linearly."""

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, None]:
        close = raw[:, :, self.data.close_index]
        slope = (close[:, -1] - close[:, 0]) / (self.window - 1)
        return close[:, -1:] + slope[:, None] * np.arange(1, self.horizon + 1), None


class Climatology(Persistence):
    """The last close and the training split's unconditional k-step log-return quantiles."""

    scaled_spread = False
