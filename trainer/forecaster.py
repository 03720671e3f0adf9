"""The interface every model answers, and the parts all of them share.

`predict_batch(windows, times)` takes RAW windows `(n, window, features)` (prices as stored,
oldest first) and, for models that read the clock, the open times (Unix seconds) of each
window's last bar; it returns a `Prediction`: point forecasts and quantiles in price units.

`fit` is one template for every model: the model's own `_fit`, then two steps learned from
data the model did not fit on or from its training residuals:
- **point shrinkage**: point = last + lambda_k (raw point - last) per step k, lambda chosen
  on the validation split to minimise MAE (0 allowed, so a model never serves a point
  forecast worse than persistence on validation);
- **residual spread** for models without a quantile output of their own: quantiles =
  point * exp(sigma_k * z_k,tau), with z the empirical quantiles of the training residuals
  standardised by sigma (the window's realised volatility * sqrt(k) for `scaled` spreads,
  1 for unconditional ones).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from db.errors import ArtifactError, InputError
from trainer.datasets import SampleSource, iter_batches
from trainer.features import Featurizer, input_columns
from trainer.params import CALENDAR_INPUTS, DataParams, ModelParams, TrainParams
from trainer.quantiles import Prediction

#: Grid of point-shrinkage factors tried on the validation split.
SHRINK_GRID: np.ndarray = np.round(np.linspace(0.0, 1.0, 21), 2)


@dataclass(frozen=True, slots=True)
class FitReport:
    epochs: int
    best_epoch: int | None
    loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    seconds: float
    samples: int

    @property
    def samples_per_second(self) -> float:
        return self.samples * self.epochs / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "loss": list(self.loss),
            "val_loss": list(self.val_loss),
            "seconds": self.seconds,
            "samples": self.samples,
        }


NO_FIT = FitReport(0, None, (), (), 0.0, 0)


def window_volatility(raw_close: np.ndarray) -> np.ndarray:
    """Standard deviation of the 1-bar log-returns of each window (n,), floored above 0."""
    r = np.diff(np.log(raw_close), axis=1)
    return np.maximum(r.std(axis=1), 1e-8)


def source_times(source: SampleSource) -> np.ndarray | None:
    """Origin open times of a sample source that knows them (window sets do, HDF5 files not)."""
    fn = getattr(source, "origin_times", None)
    return None if fn is None else np.asarray(fn())


def timed_batches(
    source: SampleSource, with_times: bool
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(raw windows, future closes, origin times or None) batch by batch; times looked up once."""
    times = source_times(source) if with_times else None
    start = 0
    for raw, future in iter_batches(source):
        stop = start + raw.shape[0]
        yield raw, future, None if times is None else times[start:stop]
        start = stop


class Forecaster(ABC):
    """A model of `arch` mapping raw windows to a probabilistic forecast.

    `meta` carries what training learned about the data (range, fingerprint, train params,
    metrics); the artifact manifest stores it.
    """

    #: Reads `times` (time-of-day / day-of-week) in `predict_batch` (featurizer models: when
    #: `data.inputs` has a calendar input).
    needs_times: bool = False
    #: Quantiles from the residual spread (else the model makes its own).
    residual_spread: ClassVar[bool] = True
    #: The residual spread scales with the window's realised volatility.
    scaled_spread: ClassVar[bool] = True
    #: Point forecasts are shrunk toward the last close on validation.
    shrinks: ClassVar[bool] = True
    #: Own quantiles are shifted per step and level on the validation split (split-conformal,
    #: as conformalized quantile regression, Romano et al. 2019): pinball-trained heads from a
    #: few epochs under-cover, and a shift learned on data the weights never saw repairs that.
    conformalizes: ClassVar[bool] = False
    #: Has a fitted `Featurizer` (scalers) that the artifact stores.
    uses_featurizer: ClassVar[bool] = False

    def __init__(self, arch: str, params: ModelParams, data: DataParams) -> None:
        self.arch = arch
        self.params = params
        self.data = data
        self.featurizer: Featurizer | None = None
        self.meta: dict[str, Any] = {}
        self.shrink = np.ones(data.horizon)
        self.spread: np.ndarray | None = None  # (H, L) standardised residual quantiles
        self.offset = np.zeros((data.horizon, len(params.quantiles)))  # (H, L) log-return shifts
        if self.uses_featurizer and any(name in CALENDAR_INPUTS for name in data.inputs):
            self.needs_times = True

    @property
    def window(self) -> int:
        return self.data.window

    @property
    def horizon(self) -> int:
        return self.data.horizon

    @property
    def features(self) -> tuple[str, ...]:
        """The raw bar columns of the windows it takes (`close` at `data.close_index`)."""
        return input_columns(self.data.features, self.data.inputs) if self.uses_featurizer else self.data.features

    @property
    def levels(self) -> tuple[float, ...]:
        return self.params.quantiles

    @property
    def fitted(self) -> bool:
        return self._core_fitted and (self.spread is not None or not self.residual_spread)

    @property
    def _core_fitted(self) -> bool:
        return True

    def _check(self, windows: np.ndarray) -> np.ndarray:
        raw = np.asarray(windows, dtype=np.float64)
        if raw.ndim != 3 or raw.shape[1:] != (self.window, len(self.features)):
            raise InputError(
                f"{self.arch}: windows of shape {raw.shape} given; it takes (n, {self.window}, "
                f"{len(self.features)}) raw {'/'.join(self.features)} windows"
            )
        if not self.fitted:
            raise InputError(f"{self.arch}: model is not fitted")
        return raw

    def _check_times(self, times: np.ndarray | None, n: int) -> np.ndarray:
        if times is None:
            raise InputError(f"{self.arch}: needs the bar times of the windows (time-of-day model)")
        t = np.asarray(times, dtype=np.int64).reshape(-1)
        if t.shape[0] != n:
            raise InputError(f"{self.arch}: {t.shape[0]} times given for {n} windows")
        return t

    # --- training: one template for every model ---------------------------------------------------
    def fit(
        self,
        train: SampleSource,
        val: SampleSource | None,
        params: TrainParams,
        *,
        log_csv: Path | None = None,
        progress: bool = False,
    ) -> FitReport:
        """Fit on `train` (early stopping, point shrinkage on `val`); returns the epoch history."""
        if len(train) == 0:
            raise InputError(f"{self.arch}: no training samples")
        t0 = time.perf_counter()
        report = self._fit(train, val, params, log_csv=log_csv, progress=progress)
        if self.shrinks and val is not None and len(val) > 0:
            self._fit_shrinkage(val)
        if self.residual_spread:
            self._fit_spread(train)
        elif self.conformalizes and val is not None and len(val) > 0:
            self._fit_offset(val)
        seconds = time.perf_counter() - t0
        return FitReport(report.epochs, report.best_epoch, report.loss, report.val_loss, seconds, len(train))

    def _fit(
        self,
        train: SampleSource,
        val: SampleSource | None,
        params: TrainParams,
        *,
        log_csv: Path | None,
        progress: bool,
    ) -> FitReport:
        """The model's own fitting (weights, scalers); baselines learn nothing here."""
        return NO_FIT

    def _raw_points(self, source: SampleSource) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unshrunk point forecasts, last closes and realised closes over a whole source."""
        pts, lasts, futs = [], [], []
        for raw, future, times in timed_batches(source, self.needs_times):
            pts.append(self._point(raw, times))
            lasts.append(raw[:, -1, self.data.close_index])
            futs.append(future)
        return np.concatenate(pts), np.concatenate(lasts), np.concatenate(futs)

    def _fit_shrinkage(self, val: SampleSource) -> None:
        point, last, actual = self._raw_points(val)
        delta = point - last[:, None]  # (n, H)
        base = last[:, None] - actual
        mae = np.stack([np.abs(base + lam * delta).mean(axis=0) for lam in SHRINK_GRID])  # (G, H)
        self.shrink = SHRINK_GRID[np.argmin(mae, axis=0)].astype(np.float64)

    def _fit_offset(self, val: SampleSource) -> None:
        """Per step and level, the shift that puts exactly tau of the validation outcomes below."""
        gaps = []
        for raw, future, times in timed_batches(val, self.needs_times):
            _, own = self._forecast(raw, times)
            assert own is not None
            y = np.log(future / raw[:, -1, self.data.close_index][:, None])
            gaps.append(y[:, :, None] - own)
        gap = np.concatenate(gaps)  # (n, H, L)
        self.offset = np.stack([np.quantile(gap[:, :, j], tau, axis=0) for j, tau in enumerate(self.levels)], axis=1)

    def _fit_spread(self, train: SampleSource) -> None:
        zs = []
        for raw, future, times in timed_batches(train, self.needs_times):
            point = self._shrunk(raw, self._point(raw, times))
            zs.append(np.log(future / point) / self._sigma(raw))
        z = np.concatenate(zs)
        self.spread = np.quantile(z, self.levels, axis=0).T.copy()  # (H, L)

    def _sigma(self, raw: np.ndarray) -> np.ndarray:
        """Scale (n, H) of the residual spread for each window and step."""
        steps = np.sqrt(np.arange(1, self.horizon + 1))
        if not self.scaled_spread:
            return np.ones((raw.shape[0], self.horizon))
        return window_volatility(raw[:, :, self.data.close_index])[:, None] * steps[None, :]

    def _shrunk(self, raw: np.ndarray, point: np.ndarray) -> np.ndarray:
        last = raw[:, -1, self.data.close_index][:, None]
        return last + self.shrink[None, :] * (point - last)

    # --- prediction ---------------------------------------------------------------------------------
    @abstractmethod
    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(point (n, H) in price units before shrinkage, own quantiles (n, H, L) as log-returns
        against the last close, or None for models served by the residual spread)."""

    def _point(self, raw: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        return self._forecast(raw, times)[0]

    def predict_batch(self, windows: np.ndarray, times: np.ndarray | None = None) -> Prediction:
        """Forecast n raw windows (n, window, features); `times` are the windows' last bar open times."""
        raw = self._check(windows)
        n = raw.shape[0]
        if n == 0:
            return Prediction.empty(self.horizon, self.levels)
        t = self._check_times(times, n) if self.needs_times else None
        last = raw[:, -1, self.data.close_index]
        raw_point, own = self._forecast(raw, t)
        point = self._shrunk(raw, raw_point)
        if own is None:
            assert self.spread is not None
            own = np.log(point / last[:, None])[:, :, None] + self._sigma(raw)[:, :, None] * self.spread[None]
        else:
            own = own + self.offset[None]
        return Prediction.from_log_returns(last, point, own, self.levels)

    # --- what the artifact stores besides the manifest -----------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"shrink": self.shrink, "offset": self.offset}
        if self.spread is not None:
            out["spread"] = self.spread
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        shrink = arrays.get("shrink")
        if shrink is None or shrink.shape != (self.horizon,):
            raise ArtifactError(f"{where}: point shrinkage missing or not of horizon {self.horizon}")
        self.shrink = shrink
        offset = arrays.get("offset")
        if offset is None or offset.shape != (self.horizon, len(self.levels)):
            raise ArtifactError(f"{where}: quantile offsets missing or not ({self.horizon}, {len(self.levels)})")
        self.offset = offset
        if self.residual_spread:
            spread = arrays.get("spread")
            if spread is None or spread.shape != (self.horizon, len(self.levels)):
                raise ArtifactError(f"{where}: residual spread missing or not ({self.horizon}, {len(self.levels)})")
            self.spread = spread

    # Each model stores only what is its own (weights, coefficients).
    def _write(self, directory: Path) -> None:
        return None

    def _read(self, directory: Path) -> None:
        return None
