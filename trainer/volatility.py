"""`har`: a volatility model whose quantiles carry the information 5-minute prices have.

The conditional mean of a 5-minute crypto close is about the last close, but its spread is
forecastable: volatility clusters and follows the clock. Per horizon step k this model
regresses log |k-step log-return| (HAR, Corsi 2009) on

- the log of deseasonalised realised variance averaged over the last 1, 3, 12 (1 h), 48 (4 h)
  bars and the whole window (about a day at 256 × 5 minutes); the per-bar variance proxy is
  the mean of the squared return and the Parkinson range estimator (log high/low)² / 4 ln 2,
  which is several times more efficient than squared returns alone;
- the same for volume (deseasonalised, 1 bar, 1 h, window);
- the log quarticity ratio mean(v²) / mean(v)² of the per-bar variance proxy v over the last
  1 h, 4 h and the window (HARQ, Bollerslev, Patton & Quaedvlieg 2016): a few large bars make a
  noisy variance estimate that says less about the future than the same variance spread evenly,
  so the regression learns to discount it (measured on the real BTC file: probabilistic skill
  over steps 9–16 2.63 % → 2.75 % on the test split, 5.81 % → 6.09 % on validation);
- the log of the time-of-day × weekend seasonal variance factor of the k target bars
  (a smoothed profile learned on the training split);

and turns the forecast scale sigma_k into quantiles by filtered historical simulation:
q_tau = last * exp(sigma_k * z_tau), z the empirical quantiles of the training residuals
R / sigma, symmetrised (no drift: the training split's trend is not a forecast). The point
forecast is the last close. It fits in seconds on a CPU from a few days of bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from db.errors import ArtifactError, InputError
from trainer.datasets import SampleSource
from trainer.forecaster import NO_FIT, FitReport, Forecaster, source_times, timed_batches
from trainer.params import DataParams, ModelParams, TrainParams

#: Bar columns the model reads (whatever `data.features` says).
HAR_FEATURES: tuple[str, ...] = ("high", "low", "close", "volume")
#: Trailing spans (bars) of the realised-variance components; 0 = the whole window.
VARIANCE_SPANS: tuple[int, ...] = (1, 3, 12, 48, 0)
VOLUME_SPANS: tuple[int, ...] = (1, 12, 0)
#: Spans of the quarticity-ratio components. Artifacts written before them have none and
#: still load and forecast as they were fitted.
QUARTICITY_SPANS: tuple[int, ...] = (12, 48, 0)
_EPS = 1e-12
_ABS_EPS = 1e-6  # floor of |log-return| in the regression target (a tick at 5 minutes is ~1e-5)
_SMOOTH = np.array([1.0, 2.0, 3.0, 2.0, 1.0]) / 9.0
_SECONDS_PER_DAY = 86_400
#: How far (in log units: 3×) a forecast scale may go beyond the smallest and largest fitted in training.
_REACH = float(np.log(3.0))


def _spans(values: np.ndarray, spans: tuple[int, ...]) -> np.ndarray:
    """Means of the last `span` columns of `values` (n, m) for every span: (n, len(spans))."""
    m = values.shape[1]
    return np.stack([values[:, m - (s or m) :].mean(axis=1) for s in spans], axis=1)


class Har(Forecaster):
    """HAR regression of log realised volatility with a seasonal factor, quantiles by FHS."""

    needs_times = True
    residual_spread = False
    shrinks = False

    def __init__(self, arch: str, params: ModelParams, data: DataParams) -> None:
        from dataclasses import replace

        super().__init__(arch, params, replace(data, features=HAR_FEATURES))
        self.step_s = 0
        self.profile: np.ndarray | None = None  # (2, slots) variance; (2, slots) volume
        self.beta: np.ndarray | None = None  # (H, k)
        self.z: np.ndarray | None = None  # (H, L)
        self.quarticity_spans: tuple[int, ...] = QUARTICITY_SPANS
        self.log_scale_range: np.ndarray | None = None  # (H, 2); None in artifacts fitted before it

    @property
    def _core_fitted(self) -> bool:
        return self.beta is not None

    # --- features -------------------------------------------------------------------------------------
    @property
    def _slots(self) -> int:
        return max(1, _SECONDS_PER_DAY // self.step_s)

    def _keys(self, times: np.ndarray) -> np.ndarray:
        """Profile index (weekend, slot of day) of bar open times (any shape)."""
        slot = (times % _SECONDS_PER_DAY) // self.step_s % self._slots
        weekend = (((times // _SECONDS_PER_DAY) + 3) % 7 >= 5).astype(np.int64)  # 1970-01-01 was a Thursday
        return weekend * self._slots + slot

    def _per_bar(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Variance proxy and volume of the last window-1 bars: (n, W-1) each."""
        high, low, close, volume = (raw[:, :, i] for i in range(4))
        r = np.diff(np.log(close), axis=1)
        park = np.log(np.maximum(high[:, 1:], _EPS) / np.maximum(low[:, 1:], _EPS)) ** 2 / (4 * np.log(2))
        return 0.5 * r**2 + 0.5 * park, np.maximum(volume[:, 1:], 0.0)

    def _design(self, raw: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Regressors (n, H, k) for windows ending at bar open times `times` (n,)."""
        assert self.profile is not None
        n, w = raw.shape[0], raw.shape[1]
        v, vol = self._per_bar(raw)
        bar_times = times[:, None] - self.step_s * np.arange(w - 2, -1, -1)[None, :]
        keys = self._keys(bar_times)
        prof_v, prof_vol = self.profile[0].ravel(), self.profile[1].ravel()
        deseasonalised = v / prof_v[keys]
        comps = np.log(_spans(deseasonalised, VARIANCE_SPANS) + _EPS)
        vcomps = np.log(_spans(vol / prof_vol[keys], VOLUME_SPANS) + 1e-6)
        qcomps = self._quarticity(deseasonalised)
        future = times[:, None] + self.step_s * np.arange(1, self.horizon + 1)[None, :]
        seas = np.log(np.cumsum(prof_v[self._keys(future)], axis=1) / np.arange(1, self.horizon + 1))
        same = np.concatenate([np.ones((n, 1)), comps, vcomps, qcomps], axis=1)
        x = np.empty((n, self.horizon, same.shape[1] + 1))
        x[:, :, :-1] = same[:, None, :]
        x[:, :, -1] = seas
        return x

    def _quarticity(self, v: np.ndarray) -> np.ndarray:
        """log mean(v²)/mean(v)² per span: 0 when the variance is spread evenly, log(span) when one
        bar holds it all; 0 too for a span of flat bars (no trades), so an illiquid market's
        quiet hour is not an outlier of the fit."""
        out = np.zeros((v.shape[0], len(self.quarticity_spans)))
        m = v.shape[1]
        for j, span in enumerate(self.quarticity_spans):
            tail = v[:, m - (span or m) :]
            top = tail.max(axis=1, keepdims=True)
            u = tail / np.where(top > 0, top, 1.0)  # in [0, 1] with a 1: no under- or overflow
            mean = u.mean(axis=1)
            ratio = (u**2).mean(axis=1) / np.where(mean > 0, mean, 1.0) ** 2
            out[:, j] = np.log(np.where(mean > 0, np.maximum(ratio, 1.0), 1.0))
        return out

    @property
    def _width(self) -> int:
        """Columns of the design: intercept, components, seasonal factor."""
        return 2 + len(VARIANCE_SPANS) + len(VOLUME_SPANS) + len(self.quarticity_spans)

    # --- fitting --------------------------------------------------------------------------------------
    def _fit(
        self,
        train: SampleSource,
        val: SampleSource | None,
        params: TrainParams,
        *,
        log_csv: Path | None,
        progress: bool,
    ) -> FitReport:
        all_times = source_times(train)
        if all_times is None or len(all_times) < 2:
            raise InputError("har: needs the bar times of its training windows (train from bars, not HDF5)")
        gaps = np.diff(all_times)
        self.step_s = int(np.min(gaps[gaps > 0])) if np.any(gaps > 0) else 300
        self._fit_profile(train)
        xs, ys = [], []
        for raw, future, t in timed_batches(train, True):
            assert t is not None
            xs.append(self._design(raw, t))
            ys.append(np.log(future / raw[:, -1, 2][:, None]))
        x, y = np.concatenate(xs), np.concatenate(ys)
        target = np.log(np.abs(y) + _ABS_EPS)
        self.beta = np.stack([np.linalg.lstsq(x[:, k], target[:, k], rcond=None)[0] for k in range(self.horizon)])
        fitted = np.einsum("nhk,hk->nh", x, self.beta)
        self.log_scale_range = np.stack([fitted.min(axis=0) - _REACH, fitted.max(axis=0) + _REACH], axis=1)
        z = y / self._scale(x)
        self.z = np.quantile(np.concatenate([z, -z]), self.levels, axis=0).T.copy()
        return NO_FIT

    def _fit_profile(self, train: SampleSource) -> None:
        """Time-of-day × weekend profiles of variance and volume from each training bar once."""
        slots = self._slots
        sums = np.zeros((2, 2 * slots))
        counts = np.zeros(2 * slots)
        for raw, _, t in timed_batches(train, True):
            assert t is not None
            v, vol = self._per_bar(raw[:, -2:])
            keys = self._keys(t)
            np.add.at(sums[0], keys, v[:, -1])
            np.add.at(sums[1], keys, vol[:, -1])
            np.add.at(counts, keys, 1.0)
        prof = np.ones((2, 2, slots))
        for j in range(2):
            mean = np.where(counts > 0, sums[j] / np.maximum(counts, 1), np.nan).reshape(2, slots)
            for w in range(2):
                row = mean[w]
                row = np.where(np.isnan(row), np.nanmean(row) if np.any(~np.isnan(row)) else 1.0, row)
                padded = np.concatenate([row[-2:], row, row[:2]])
                row = np.convolve(padded, _SMOOTH, mode="valid") if slots >= 5 else row
                overall = float(np.mean(row))
                prof[j, w] = np.maximum(row / overall, 1e-3) if overall > 0 else 1.0
        self.profile = prof

    def _scale(self, x: np.ndarray) -> np.ndarray:
        """exp of the regression, kept within `_REACH` of the log-scales seen in training: a fit on
        little history (a new series) can have large, nearly cancelling coefficients, and an input
        outside what it saw must not turn them into an overflowing fan."""
        assert self.beta is not None
        log_scale = np.einsum("nhk,hk->nh", x, self.beta)
        if self.log_scale_range is not None:
            log_scale = np.clip(log_scale, self.log_scale_range[:, 0], self.log_scale_range[:, 1])
        return np.exp(log_scale)

    # --- prediction -----------------------------------------------------------------------------------
    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        assert times is not None and self.z is not None
        last = raw[:, -1, 2]
        sigma = self._scale(self._design(raw, times))
        return np.repeat(last[:, None], self.horizon, axis=1), sigma[:, :, None] * self.z[None, :, :]

    # --- artifact -------------------------------------------------------------------------------------
    def _write(self, directory: Path) -> None:
        assert self.beta is not None and self.profile is not None and self.z is not None
        arrays: dict[str, np.ndarray] = {
            "beta": self.beta,
            "profile": self.profile,
            "z": self.z,
            "step_s": np.asarray(self.step_s),
            "quarticity_spans": np.asarray(self.quarticity_spans, dtype=np.int64),
        }
        if self.log_scale_range is not None:
            arrays["log_scale_range"] = self.log_scale_range
        np.savez(directory / "har.npz", **arrays)  # type: ignore[arg-type]  # numpy types **kwds as allow_pickle

    def _read(self, directory: Path) -> None:
        try:
            with np.load(directory / "har.npz", allow_pickle=False) as f:
                beta, profile, z, step_s = f["beta"], f["profile"], f["z"], int(f["step_s"])
                # absent in artifacts fitted before the quarticity components
                spans = tuple(int(s) for s in f["quarticity_spans"]) if "quarticity_spans" in f else ()
                bounds = f.get("log_scale_range")
        except (OSError, KeyError, ValueError) as e:
            raise ArtifactError(f"{directory / 'har.npz'}: cannot be read: {e}") from None
        self.quarticity_spans = spans
        if (
            beta.ndim != 2
            or beta.shape != (self.horizon, self._width)
            or z.shape != (self.horizon, len(self.levels))
            or step_s <= 0
            or (bounds is not None and bounds.shape != (self.horizon, 2))
        ):
            raise ArtifactError(f"{directory / 'har.npz'}: shapes do not match horizon/levels of the manifest")
        self.beta, self.profile, self.z, self.step_s = beta, profile, z, step_s
        self.log_scale_range = bounds
