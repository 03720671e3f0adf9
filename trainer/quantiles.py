"""Probabilistic forecasts: a point forecast plus quantiles per horizon step. Pure numpy.

Every model returns a `Prediction`; quantiles are in price units, levels ascending, and
never cross (`non_crossing` sorts along the level axis — for a set of quantile estimates
sorting is the rearrangement of Chernozhukov et al. 2010, which never makes pinball loss
worse).

Scores, all per horizon step over the same origins:
- pinball (quantile) loss per level: mean of (1{y < q} - tau) (q - y);
- WIS, the weighted interval score of Bracher et al. 2021: for K central intervals plus the
  median it equals 2/(2K+1) * sum of the pinball losses, i.e. 2 x the mean pinball loss over
  the levels, which is how it is computed here (for any level set);
- coverage of the central interval [q_lowest, q_highest] and its mean width;
- probabilistic skill = 1 - pinball(model) / pinball(climatology) (> 0 beats climatology).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from db.errors import ConfigError

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)


def check_levels(levels: Sequence[float], key: str = "model.quantiles") -> tuple[float, ...]:
    """Strictly increasing levels in (0, 1), at least two (a central interval needs both ends)."""
    out = tuple(float(x) for x in levels)
    if len(out) < 2:
        raise ConfigError(f"{key} = {list(out)}: give at least two levels, e.g. [0.1, 0.5, 0.9]")
    if any(not 0.0 < x < 1.0 for x in out) or any(b <= a for a, b in itertools.pairwise(out)):
        raise ConfigError(f"{key} = {list(out)}: levels must be strictly increasing and inside (0, 1)")
    return out


def level_name(level: float) -> str:
    """Column name of a level: 0.1 -> q10, 0.5 -> q50, 0.025 -> q2.5."""
    pct = round(level * 100.0, 6)
    return f"q{int(pct)}" if pct == int(pct) else f"q{pct:g}"


def non_crossing(quantiles: np.ndarray) -> np.ndarray:
    """Sort along the last (level) axis so that q_lower <= q_higher everywhere."""
    return np.sort(np.asarray(quantiles, dtype=np.float64), axis=-1)


@dataclass(frozen=True, slots=True)
class Prediction:
    """Forecasts of n origins: `point` (n, H) and `quantiles` (n, H, L) in price units."""

    point: np.ndarray
    quantiles: np.ndarray
    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        p, q = self.point, self.quantiles
        if p.ndim != 2 or q.ndim != 3 or q.shape[:2] != p.shape or q.shape[2] != len(self.levels):
            raise ValueError(f"prediction shapes disagree: point {p.shape}, quantiles {q.shape}, levels {self.levels}")

    def __len__(self) -> int:
        return int(self.point.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.point.shape[1])

    @classmethod
    def empty(cls, horizon: int, levels: tuple[float, ...]) -> Prediction:
        return cls(np.zeros((0, horizon)), np.zeros((0, horizon, len(levels))), levels)

    @classmethod
    def from_log_returns(
        cls, last_close: np.ndarray, point: np.ndarray, log_quantiles: np.ndarray, levels: tuple[float, ...]
    ) -> Prediction:
        """Quantiles given as log-returns (n, H, L) against `last_close` (n,), point in price units."""
        last = np.asarray(last_close, dtype=np.float64)[:, None, None]
        return cls(np.asarray(point, dtype=np.float64), non_crossing(last * np.exp(log_quantiles)), tuple(levels))

    def take(self, rows: np.ndarray | slice) -> Prediction:
        return Prediction(self.point[rows], self.quantiles[rows], self.levels)


def pinball(quantiles: np.ndarray, actual: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Pinball loss per origin, step and level: (n, H, L)."""
    q = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)[..., None]
    tau = np.asarray(levels, dtype=np.float64)
    return np.where(y < q, 1.0 - tau, 0.0) * (q - y) + np.where(y >= q, tau, 0.0) * (y - q)


@dataclass(frozen=True, slots=True)
class QuantileScores:
    """Per-step probabilistic scores of one model (tuples of length H; `pinball` is (L, H))."""

    levels: tuple[float, ...]
    pinball: tuple[tuple[float, ...], ...]
    pinball_mean: tuple[float, ...]
    wis: tuple[float, ...]
    coverage: tuple[float, ...]
    width: tuple[float, ...]

    @property
    def nominal_coverage(self) -> float:
        return self.levels[-1] - self.levels[0]


def quantile_scores(quantiles: np.ndarray, actual: np.ndarray, levels: Sequence[float]) -> QuantileScores:
    """Scores of quantile forecasts (n, H, L) against realised closes (n, H)."""
    q = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)
    if q.ndim != 3 or q.shape[:2] != y.shape or q.shape[2] != len(levels):
        raise ValueError(f"shapes differ: quantiles {q.shape}, actual {y.shape}, levels {list(levels)}")
    if y.shape[0] == 0:
        raise ValueError("no forecast origins to score")
    loss = pinball(q, y, levels).mean(axis=0)  # (H, L)
    mean = loss.mean(axis=1)
    lo, hi = q[..., 0], q[..., -1]
    inside = ((y >= lo) & (y <= hi)).mean(axis=0)
    width = (hi - lo).mean(axis=0)
    return QuantileScores(
        tuple(float(x) for x in levels),
        tuple(tuple(float(v) for v in loss[:, j]) for j in range(loss.shape[1])),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in 2.0 * mean),
        tuple(float(v) for v in inside),
        tuple(float(v) for v in width),
    )


def probabilistic_skill(model: Sequence[float], reference: Sequence[float]) -> tuple[float, ...]:
    """1 - pinball(model) / pinball(reference) per step (NaN where the reference is 0)."""
    m, r = np.asarray(model, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tuple(float(v) for v in np.where(r > 0, 1.0 - m / r, np.nan))
