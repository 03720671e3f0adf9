"""Online scoring: turn stored forecast steps whose target bar has closed into scores, and keep a
rolling view of live error vs persistence that flags drifting models. Pure; I/O is the caller's."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from db.records import ForecastScore, SeriesKey
from db.scores import Unscored
from trainer.baselines import climatology_quantiles
from trainer.quantiles import pinball


@dataclass(frozen=True, slots=True)
class Reference:
    """Climatology of one series: the unconditional quantiles (horizon, levels) of its k-step
    log-returns over the stored bars up to `through` (the last `retrain.history_days`). Every
    probabilistic score also gets climatology's pinball loss on the same bar, so live
    probabilistic skill compares both on exactly the same outcomes."""

    through: datetime
    levels: tuple[float, ...]
    quantiles: np.ndarray

    @classmethod
    def build(cls, times: np.ndarray, closes: np.ndarray, *, through: datetime, horizon: int, step_s: int,
              levels: tuple[float, ...]) -> Reference | None:
        q = climatology_quantiles(times, closes, horizon, step_s, levels)
        return None if q is None else cls(through, tuple(levels), q)

    def pinball_mean(self, step: int, last_close: float, actual: float, levels: tuple[float, ...]) -> float | None:
        """Climatology's mean pinball loss for one scored step (None if the levels differ)."""
        if tuple(levels) != self.levels or not 1 <= step <= self.quantiles.shape[0] or not last_close > 0:
            return None
        q = last_close * np.exp(self.quantiles[step - 1])
        return float(pinball(q[None, None, :], np.array([[actual]]), self.levels).mean())


def score(rows: Iterable[Unscored], now: datetime,
          references: Mapping[SeriesKey, Reference] | None = None) -> list[ForecastScore]:
    """Realised error (predicted - actual) and persistence's (last close - actual) per step, and
    for a step served with quantiles: pinball loss per level, whether the actual fell inside the
    central interval [lowest, highest quantile], its width, and climatology's pinball loss on the
    same step where the series has a `Reference`."""
    refs = references or {}
    out = []
    for r in rows:
        actual = float(r.actual)
        last = float(r.last_close) if r.last_close is not None else float("nan")
        loss: tuple[float, ...] | None = None
        inside: bool | None = None
        width: float | None = None
        clim: float | None = None
        if r.quantiles is not None and r.levels is not None:
            q = np.asarray(r.quantiles, dtype=np.float64)
            loss = tuple(float(v) for v in pinball(q[None, None, :], np.array([[actual]]), r.levels)[0, 0])
            inside = bool(q[0] <= actual <= q[-1])
            width = float(q[-1] - q[0])
            ref = refs.get(r.series)
            clim = None if ref is None else ref.pinball_mean(r.step, last, actual, r.levels)
        out.append(
            ForecastScore(
                series=r.series, issued_at=r.issued_at, model_id=r.model_id, step=r.step,
                target_time=r.target_time, predicted=r.predicted, actual=r.actual,
                error=r.predicted - actual, persistence_error=last - actual, scored_at=now,
                levels=r.levels if loss is not None else None, pinball=loss, inside=inside, width=width,
                climatology_pinball=clim,
            )
        )
    return out


@dataclass
class DriftWatch:
    """Rolling mean absolute errors of one (series, model) over the last `window` scored steps.

    `drifting` once the model's MAE has exceeded persistence's by `margin` (relative) on every
    check for `period` consecutive checks; it clears as soon as it no longer does.
    """

    window: int = 16 * 288
    margin: float = 0.1
    period: int = 12
    _model: deque[float] = field(default_factory=deque)
    _persist: deque[float] = field(default_factory=deque)
    _over: int = 0

    def add(self, scores: Iterable[ForecastScore]) -> None:
        for s in scores:
            self._model.append(abs(s.error))
            self._persist.append(abs(s.persistence_error))
            if len(self._model) > self.window:
                self._model.popleft()
                self._persist.popleft()

    @property
    def mae(self) -> float | None:
        return sum(self._model) / len(self._model) if self._model else None

    @property
    def persistence_mae(self) -> float | None:
        return sum(self._persist) / len(self._persist) if self._persist else None

    def check(self) -> bool:
        """Call once per scoring round; returns whether the model is flagged as drifting."""
        m, p = self.mae, self.persistence_mae
        if m is None or p is None:
            return False
        self._over = self._over + 1 if m > p * (1 + self.margin) else 0
        return self._over >= self.period

    @property
    def drifting(self) -> bool:
        return self._over >= self.period
