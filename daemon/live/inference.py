"""Batched inference off the event loop.

A `ModelBook` maps each model group to the model serving it; a swap replaces the entry in one
assignment, and a batch reads each entry once, so every forecast comes entirely from one model.
All windows whose bar closed at the same boundary go through one `predict_batch` per model (one
compiled forward pass), in a single worker thread so sockets keep being read meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from daemon import metrics
from daemon.live.calibration import CalibrationBook
from daemon.live.window import COLUMNS, bar_values
from db.errors import ArtifactError
from db.records import Forecast, SeriesKey, to_unix

if TYPE_CHECKING:
    from trainer.forecaster import Forecaster

T = TypeVar("T")
log = logging.getLogger("barcast.live")


@dataclass(frozen=True, slots=True)
class ServingModel:
    """A loaded model and the window columns it reads."""

    model_id: str
    model: Forecaster
    columns: tuple[int, ...]

    @classmethod
    def of(cls, model_id: str, model: Forecaster) -> ServingModel:
        return cls(model_id, model, tuple(COLUMNS.index(f) for f in model.features))

    @property
    def window(self) -> int:
        return int(self.model.window)

    @property
    def horizon(self) -> int:
        return int(self.model.horizon)


@dataclass(frozen=True)
class Installed:
    """What a (re)load of a group's champion did: the model now serving, and why it is not the
    registry's champion when loading that failed."""

    group: str
    serving: ServingModel
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "serving": self.serving.model_id, "loaded": self.error is None,
                "error": self.error}


def check_prediction(serving: ServingModel, where: str) -> None:
    """A test prediction on a synthetic window before a model may serve: an artifact that loads
    but predicts the wrong shape, non-finite or unordered values is refused like a corrupt one."""
    from daemon.feeds.randomwalk import random_walk_bars

    bars = random_walk_bars("TEST-USD", serving.window, start=datetime(2024, 1, 1, tzinfo=UTC))
    x = np.stack([bar_values(b) for b in bars])[None, :, list(serving.columns)]
    times = np.array([to_unix(bars[-1].open_time)], dtype=np.int64)
    try:
        pred = serving.model.predict_batch(x, times)
        point = np.asarray(pred.point, dtype=np.float64)
        quantiles = np.asarray(pred.quantiles, dtype=np.float64)
    except Exception as exc:  # anything a broken model raises
        raise ArtifactError(f"{where}: test prediction failed: {type(exc).__name__}: {exc}") from None
    if point.shape != (1, serving.horizon):
        raise ArtifactError(f"{where}: test prediction has shape {point.shape}, expected {(1, serving.horizon)}")
    if not (np.isfinite(point).all() and np.isfinite(quantiles).all()):
        raise ArtifactError(f"{where}: test prediction is not finite (NaN or infinity)")


class ModelBook:
    """group -> serving model; reads are lock-free snapshots, swaps are atomic."""

    def __init__(self) -> None:
        self._models: dict[str, ServingModel] = {}
        self._lock = threading.Lock()

    def get(self, group: str) -> ServingModel | None:
        return self._models.get(group)

    def swap(self, group: str, serving: ServingModel) -> ServingModel | None:
        with self._lock:
            old = self._models.get(group)
            models = dict(self._models)
            models[group] = serving
            self._models = models  # one reference assignment: readers see old or new, never a mix
        return old

    def snapshot(self) -> dict[str, ServingModel]:
        return self._models


@dataclass(frozen=True, slots=True)
class Job:
    """One series' forecast request at a bar boundary."""

    series: SeriesKey
    serving: ServingModel
    window: np.ndarray  # (>= model window, len(COLUMNS)) oldest first
    issued_at: datetime
    last_close: Decimal
    closed_at: float  # time.monotonic() when the bar close was seen


def forecast_batch(
    jobs: Sequence[Job], step: Callable[[SeriesKey], timedelta], calibration: CalibrationBook | None = None
) -> list[Forecast]:
    """Run one predict_batch per distinct model over all its jobs; build Forecast records whose
    quantiles are the served ones: calibrated per series x model, ascending at every step."""
    out: list[Forecast] = []
    by_model: dict[int, list[Job]] = {}
    for j in jobs:
        by_model.setdefault(id(j.serving), []).append(j)
    for group in by_model.values():
        serving = group[0].serving
        x = np.stack([j.window[-serving.window :, list(serving.columns)] for j in group])
        times = np.array([to_unix(j.issued_at) for j in group], dtype=np.int64)
        pred = serving.model.predict_batch(x, times)
        closes = np.asarray(pred.point, dtype=np.float64)
        levels = tuple(float(v) for v in pred.levels)
        last = np.array([float(j.last_close) for j in group])
        served = np.sort(np.asarray(pred.quantiles, dtype=np.float64), axis=-1)
        bad = np.asarray(~(np.isfinite(closes).all(axis=1) & np.isfinite(served).all(axis=(1, 2))))
        if bad.any():
            closes, served = _persistence_rows(group, serving, bad, closes, served, times)
        done = time.monotonic()
        now = datetime.now(UTC)
        for i, (j, row) in enumerate(zip(group, closes, strict=True)):
            dt = step(j.series)
            q = served[i : i + 1]
            if calibration is not None:
                q = calibration.apply(j.series, PERSISTENCE_ID if bad[i] else serving.model_id, levels,
                                      last[i : i + 1], q)
            out.append(
                Forecast(
                    series=j.series,
                    issued_at=j.issued_at,
                    model_id=PERSISTENCE_ID if bad[i] else serving.model_id,
                    target_times=tuple(j.issued_at + dt * (k + 1) for k in range(serving.horizon)),
                    closes=tuple(float(v) for v in row),
                    last_close=j.last_close,
                    latency_ms=(done - j.closed_at) * 1000.0,
                    created_at=now,
                    levels=levels,
                    quantiles=tuple(tuple(float(v) for v in step_q) for step_q in q[0]),
                )
            )
    return out


#: The baseline's model id (trainer.retrain_job.BASELINE_ID; not imported: TensorFlow-free here).
PERSISTENCE_ID = "persistence"


def _persistence_rows(
    group: Sequence[Job], serving: ServingModel, bad: np.ndarray, closes: np.ndarray, served: np.ndarray,
    times: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose model output is not finite (e.g. a window holding a backfilled bar without the
    trade count a `log_trades` model reads) are served by persistence with its random-walk fan,
    stored under persistence's id: never a NaN forecast, never a bar left without one."""
    from trainer.models import build_model
    from trainer.params import DataParams, ModelParams

    params = ModelParams(quantiles=tuple(float(v) for v in serving.model.levels))
    base = build_model("persistence", params, DataParams(window=serving.window, horizon=serving.horizon))
    close = COLUMNS.index("close")
    rows = [int(i) for i in np.flatnonzero(bad)]
    x = np.stack([group[i].window[-serving.window :, [close]] for i in rows])
    pred = base.predict_batch(x, times[rows])
    closes, served = closes.copy(), served.copy()
    closes[rows] = pred.point
    served[rows] = pred.quantiles
    for i in rows:
        metrics.FORECAST_FALLBACKS.labels(str(group[i].series), serving.model_id).inc()
    log.warning("model output not finite: persistence serves these series this bar", extra={
        "model": serving.model_id, "series": [str(group[i].series) for i in rows]})
    return closes, served


class Worker:
    """A single named thread for model work (TensorFlow state stays on one thread)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
