"""From raw bar windows to model tensors and back to prices.

Two target forms:
- `log_return` (default): inputs are per-bar log-returns against the previous close
  (log1p for volume / trade count), so a window of `W` raw bars gives `W-1` input steps;
  targets are `log(close[o+k] / close[o])`. The model never sees the price level, which is
  what made the study's scaled-price models fail on prices outside the training range.
- `price` (the study's setting): inputs and targets are raw values MinMax/standard scaled.

Both are scaled by scalers fit on the training split only. Everything here is pure numpy and
works batch by batch, so nothing needs the whole data set in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from db.errors import ArtifactError
from trainer.params import PRICE_COLUMNS, TARGETS
from trainer.scaling import Scaler, ScalerFitter


def input_length(window: int, target: str) -> int:
    return window - 1 if target == "log_return" else window


def raw_inputs(raw: np.ndarray, features: tuple[str, ...], target: str) -> np.ndarray:
    """Unscaled model inputs (n, input_length, f) of raw windows (n, window, f)."""
    if target == "price":
        return np.asarray(raw, dtype=np.float64)
    close = raw[:, :-1, features.index("close")]
    out = np.empty((raw.shape[0], raw.shape[1] - 1, raw.shape[2]), dtype=np.float64)
    log_prev = np.log(close)
    for j, f in enumerate(features):
        col = raw[:, 1:, j]
        out[:, :, j] = np.log(col) - log_prev if f in PRICE_COLUMNS else np.log1p(np.maximum(col, 0.0))
    return out


def raw_targets(raw: np.ndarray, future_close: np.ndarray, close_index: int, target: str) -> np.ndarray:
    """Unscaled targets (n, horizon)."""
    if target == "price":
        return np.asarray(future_close, dtype=np.float64)
    return np.log(future_close) - np.log(raw[:, -1, close_index])[:, None]


@dataclass(frozen=True, slots=True)
class Featurizer:
    features: tuple[str, ...]
    target: str
    window: int
    horizon: int
    input_scaler: Scaler
    target_scaler: Scaler

    @property
    def close_index(self) -> int:
        return self.features.index("close")

    @property
    def input_length(self) -> int:
        return input_length(self.window, self.target)

    def check_windows(self, raw: np.ndarray) -> None:
        if raw.ndim != 3 or raw.shape[1:] != (self.window, len(self.features)):
            raise ValueError(
                f"windows of shape {raw.shape} given; this model takes (n, {self.window}, "
                f"{len(self.features)}) raw {'/'.join(self.features)} windows"
            )

    def inputs(self, raw: np.ndarray) -> np.ndarray:
        return self.input_scaler.transform(raw_inputs(raw, self.features, self.target)).astype(np.float32)

    def targets(self, raw: np.ndarray, future_close: np.ndarray) -> np.ndarray:
        y = raw_targets(raw, future_close, self.close_index, self.target)
        return self.target_scaler.transform(y).astype(np.float32)

    def prices(self, predicted: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Model outputs (n, horizon) back to price units."""
        y = self.target_scaler.inverse(np.asarray(predicted, dtype=np.float64))
        if self.target == "price":
            return y
        return raw[:, -1, self.close_index][:, None] * np.exp(y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "target": self.target,
            "window": self.window,
            "horizon": self.horizon,
            "input_scaler": self.input_scaler.to_dict(),
            "target_scaler": self.target_scaler.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Featurizer:
        try:
            f = cls(
                tuple(d["features"]),
                d["target"],
                int(d["window"]),
                int(d["horizon"]),
                Scaler.from_dict(d["input_scaler"]),
                Scaler.from_dict(d["target_scaler"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"featurizer description is malformed: {e}") from None
        if f.target not in TARGETS or "close" not in f.features:
            raise ArtifactError(f"featurizer description {d!r} is invalid")
        if len(f.input_scaler.offset) != len(f.features) or len(f.target_scaler.offset) != f.horizon:
            raise ArtifactError("featurizer scalers do not match its features / horizon")
        return f


def fit_featurizer(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    features: tuple[str, ...],
    target: str,
    scaler: str,
    window: int,
    horizon: int,
) -> Featurizer:
    """Fit the scalers on training batches (raw windows, future closes) only.

    In `price` mode the target is scaled with the close column's parameters (the study's way),
    so a forecast and its input live on one scale. Log-return targets are divided by their
    root mean square per step and never shifted: 0 stays "no change".
    """
    close_index = features.index("close")
    fx, fy = ScalerFitter(scaler), ScalerFitter("rms")
    for raw, future in batches:
        fx.update(raw_inputs(raw, features, target))
        if target == "log_return":
            fy.update(raw_targets(raw, future, close_index, target))
    input_scaler = fx.finish()
    if target == "log_return":
        target_scaler = fy.finish()
    else:
        c_off, c_scale = input_scaler.offset[close_index], input_scaler.scale[close_index]
        target_scaler = Scaler(scaler, (c_off,) * horizon, (c_scale,) * horizon)
    return Featurizer(features, target, window, horizon, input_scaler, target_scaler)
