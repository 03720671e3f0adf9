"""Online calibration of the served quantiles, per (series, model), kept across restarts.

Inference applies each series x model `Calibrator` (adaptive conformal inference, see
trainer/calibration.py) to the model's quantiles before they are stored, so what is stored,
logged and served is the calibrated fan. The scorer feeds every scored step (the quantiles it
was served with and the realised close) back in. Updates are computed on copies and committed
only once the scores and the new states are stored in one transaction: a failed write leaves
memory as the database has it, so no outcome is counted twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import numpy as np

from db.records import CalibrationState, SeriesKey
from db.scores import Unscored
from trainer.calibration import Calibrator

log = logging.getLogger("barcast.live")

Key = tuple[SeriesKey, str]


class CalibrationBook:
    """(series, model) -> Calibrator; `apply` runs on the inference thread, `updated`/`commit`
    on the DB writer thread, a lock keeps each swap whole."""

    def __init__(self, *, horizon: int, gamma: float) -> None:
        self.horizon = horizon
        self.gamma = gamma
        self._cal: dict[Key, Calibrator] = {}
        self._lock = threading.Lock()

    def load(self, states: Iterable[CalibrationState]) -> int:
        """Restore persisted states (at start). A state of another horizon is dropped (it cannot
        apply); the configured step size replaces the stored one."""
        n = 0
        for s in states:
            try:
                cal = Calibrator.from_dict(s.state)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("calibration state unreadable; starting that model uncalibrated",
                            extra={"series": str(s.series), "model": s.model_id, "error": str(exc)})
                continue
            if cal.horizon != self.horizon:
                continue
            cal.gamma = self.gamma
            self._cal[(s.series, s.model_id)] = cal
            n += 1
        return n

    def get(self, series: SeriesKey, model_id: str) -> Calibrator | None:
        return self._cal.get((series, model_id))

    def _fresh(self, key: Key, levels: tuple[float, ...]) -> Calibrator:
        cal = self._cal.get(key)
        if cal is None or cal.levels != levels:
            return Calibrator(levels, self.horizon, self.gamma)
        return cal

    def apply(self, series: SeriesKey, model_id: str, levels: tuple[float, ...], last_close: np.ndarray,
              quantiles: np.ndarray) -> np.ndarray:
        """Served quantiles (n, H, L) of one series x model: calibrated and sorted."""
        with self._lock:
            cal = self._fresh((series, model_id), levels)
            return cal.apply(last_close, quantiles)

    def updated(self, rows: Iterable[Unscored]) -> dict[Key, Calibrator]:
        """Calibrators moved by these scored steps (copies; the book is unchanged until `commit`)."""
        out: dict[Key, Calibrator] = {}
        for r in rows:
            if r.quantiles is None or r.levels is None or not 1 <= r.step <= self.horizon:
                continue
            key = (r.series, r.model_id)
            cal = out.get(key)
            if cal is None or cal.levels != r.levels:
                with self._lock:
                    base = self._fresh(key, r.levels)
                cal = out[key] = Calibrator.from_dict(base.to_dict())
            cal.update(r.step, np.asarray(r.quantiles, dtype=np.float64), float(r.actual))
        return out

    def commit(self, moved: Mapping[Key, Calibrator]) -> None:
        with self._lock:
            self._cal.update(moved)

    @staticmethod
    def states(moved: Mapping[Key, Calibrator], now: datetime | None = None) -> list[CalibrationState]:
        at = now or datetime.now(UTC)
        return [CalibrationState(series, model, cal.to_dict(), at) for (series, model), cal in moved.items()]
