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
from db import registry
from db.errors import ArtifactError
from db.records import Forecast, SeriesKey, to_unix

if TYPE_CHECKING:
    from daemon.config import Config
    from db.engine import Database
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
        fallback_id = serving.model_id
        if bad.any():
            closes, served, fallback_id = _persistence_rows(group, serving, bad, closes, served, times)
        done = time.monotonic()
        now = datetime.now(UTC)
        for i, (j, row) in enumerate(zip(group, closes, strict=True)):
            dt = step(j.series)
            q = served[i : i + 1]
            if calibration is not None:
                q = calibration.apply(j.series, fallback_id if bad[i] else serving.model_id, levels,
                                      last[i : i + 1], q)
            out.append(
                Forecast(
                    series=j.series,
                    issued_at=j.issued_at,
                    model_id=fallback_id if bad[i] else serving.model_id,
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


def _persistence_rows(
    group: Sequence[Job], serving: ServingModel, bad: np.ndarray, closes: np.ndarray, served: np.ndarray,
    times: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows whose model output is not finite (e.g. a window holding a backfilled bar without the
    trade count a `log_trades` model reads) are served by persistence with its random-walk fan,
    stored under persistence's id: never a NaN forecast, never a bar left without one."""
    from trainer.models import build_model
    from trainer.params import DataParams, ModelParams
    from trainer.retrain_job import BASELINE_ID

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
    return closes, served, BASELINE_ID


class ModelInstaller:
    """Puts a group's champion into the model book: loaded on the inference thread, checked by a
    test prediction, swapped in one assignment; the persistence baseline where there is none."""

    def __init__(self, config: Config, database: Database, book: ModelBook, worker: Worker) -> None:
        self.config = config
        self.database = database
        self.book = book
        self.worker = worker

    def load_serving(self, group: str) -> ServingModel:
        """The champion of a group's first series, checked by a test prediction, or the
        persistence baseline (inference thread)."""
        from trainer.artifact_store import local_path
        from trainer.artifacts import load_artifact
        from trainer.retrain_job import BASELINE_ID

        keys = self.config.group_series(group)
        info = registry.champion(self.database, keys[0]) if keys else None
        data = self.config.data
        if info is not None and info.id != BASELINE_ID and info.artifact_path:
            path = local_path(self.database, info.artifact_path, self.config.artifacts_dir)
            model = load_artifact(path, window=data.window, horizon=data.horizon)
            serving = ServingModel.of(info.id, model)
            check_prediction(serving, info.artifact_path)
            return serving
        return self.baseline()

    def baseline(self) -> ServingModel:
        """Persistence with a Gaussian random-walk fan (calibrated online like any model)."""
        from trainer.models import build_model
        from trainer.retrain_job import BASELINE_ID

        return ServingModel.of(BASELINE_ID, build_model("persistence", self.config.model, self.config.data))

    async def install(self, group: str) -> ServingModel:
        return (await self.reload(group)).serving

    async def reload(self, group: str) -> Installed:
        """(Re)load a group's champion and swap it in atomically, only once it loaded and made a
        test prediction. An artifact that cannot be loaded (deleted, corrupt, from another window
        size, predicting nonsense) keeps the model already serving, or the persistence baseline at
        start: forecasting never stops over a bad file, and the result says what happened."""
        try:
            serving = await self.worker.run(self.load_serving, group)
        except ArtifactError as exc:
            current = self.book.get(group)
            serving = current or self.baseline()
            log.error("champion artifact unusable; serving another model", extra={
                "group": group, "error": str(exc), "serving": serving.model_id})
            if current is None:
                self.book.swap(group, serving)
            return Installed(group, serving, str(exc))
        old = self.book.swap(group, serving)
        if old is None or old.model_id != serving.model_id:
            log.info("model serving", extra={"group": group, "model": serving.model_id,
                                             "previous": old.model_id if old else None})
        return Installed(group, serving, None)


class Worker:
    """A single named thread for model work (TensorFlow state stays on one thread)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
