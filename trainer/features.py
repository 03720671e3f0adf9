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
from trainer.params import CALENDAR_INPUTS, FEATURE_COLUMNS, INPUT_COLUMNS, PRICE_COLUMNS, TARGETS
from trainer.scaling import Scaler, ScalerFitter

_VAR_FLOOR = 1e-10  # per-bar variance floor (a flat bar); 5-minute BTC variance is about 1e-6
_ABS_FLOOR = 1e-6  # |log-return| floor (a tick at 5 minutes is about 1e-5)
_DAY = 86_400


def input_length(window: int, target: str) -> int:
    return window - 1 if target == "log_return" else window


def input_columns(features: tuple[str, ...], inputs: tuple[str, ...]) -> tuple[str, ...]:
    """The bar columns a featurizer reads: `features` first (so `close` keeps its index), then
    the further columns the derived `inputs` need, in FEATURE_COLUMNS order."""
    need = {c for name in inputs for c in INPUT_COLUMNS[name]}
    return (*features, *(c for c in FEATURE_COLUMNS if c in need and c not in features))


def input_width(features: tuple[str, ...], inputs: tuple[str, ...]) -> int:
    """Columns of the model input: one per base feature, one or two (sin/cos) per derived input."""
    return len(features) + sum(2 if name in CALENDAR_INPUTS else 1 for name in inputs)


def bar_times(last: np.ndarray, window: int, step: int) -> np.ndarray:
    """Open times (n, window) of the bars of gap-free windows whose last bar opened at `last` (n,)."""
    return np.asarray(last, dtype=np.int64)[:, None] - step * np.arange(window - 1, -1, -1, dtype=np.int64)[None, :]


def per_bar_inputs(
    values: np.ndarray,
    times: np.ndarray | None,
    columns: tuple[str, ...],
    base: tuple[str, ...],
    inputs: tuple[str, ...] = (),
) -> np.ndarray:
    """Unscaled log-return-mode inputs (..., T-1, k) of bars 1..T-1 of `values` (..., T, f).

    Row t uses bar t and bar t-1 only (never a later bar), so the same function serves a batch of
    windows (n, W, f) and a whole bar array (T, f) alike, and a window's inputs are the matching
    rows of the whole array's. `times` (..., T) are bar open times (needed by calendar inputs).
    """
    col = {c: values[..., j] for j, c in enumerate(columns)}
    close = col["close"]
    log_prev = np.log(close[..., :-1])
    out: list[np.ndarray] = []
    for f in base:
        x = col[f][..., 1:]
        out.append(np.log(x) - log_prev if f in PRICE_COLUMNS else np.log1p(np.maximum(x, 0.0)))
    for name in inputs:
        if name == "log_range":  # Garman-Klass variance (Parkinson's range term minus the open-close part)
            hl = np.log(col["high"][..., 1:] / col["low"][..., 1:])
            co = np.log(close[..., 1:] / col["open"][..., 1:])
            gk = np.maximum(0.5 * hl**2 - (2 * np.log(2) - 1) * co**2, 0.0)
            out.append(0.5 * np.log(gk + _VAR_FLOOR))
        elif name == "log_abs_return":
            out.append(np.log(np.abs(np.log(close[..., 1:]) - log_prev) + _ABS_FLOOR))
        elif name == "log_volume":
            out.append(np.log1p(np.maximum(col["volume"][..., 1:], 0.0)))
        elif name == "log_trades":
            out.append(np.log1p(np.maximum(col["trade_count"][..., 1:], 0.0)))
        else:  # calendar: sin/cos of the phase of the day or of the week (Monday 0)
            if times is None:
                raise ValueError(f"input {name} needs the bar times")
            t = np.asarray(times, dtype=np.int64)[..., 1:]
            # day of week: 1970-01-01 was a Thursday
            phase = (t % _DAY) / _DAY if name == "time_of_day" else (((t // _DAY) + 3) % 7) / 7.0
            out.extend((np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)))
    return np.stack(out, axis=-1).astype(np.float64)


def raw_inputs(
    raw: np.ndarray,
    features: tuple[str, ...],
    target: str,
    *,
    base: tuple[str, ...] | None = None,
    inputs: tuple[str, ...] = (),
    times: np.ndarray | None = None,
) -> np.ndarray:
    """Unscaled model inputs (n, input_length, k) of raw windows (n, window, f) whose columns are
    `features`; `base` (default: all of them) get the per-bar transform, `inputs` are added;
    `times` (n, window) are the bars' open times."""
    if target == "price":
        return np.asarray(raw, dtype=np.float64)
    return per_bar_inputs(raw, times, features, features if base is None else base, inputs)


def raw_targets(raw: np.ndarray, future_close: np.ndarray, close_index: int, target: str) -> np.ndarray:
    """Unscaled targets (n, horizon)."""
    if target == "price":
        return np.asarray(future_close, dtype=np.float64)
    return np.log(future_close) - np.log(raw[:, -1, close_index])[:, None]


@dataclass(frozen=True, slots=True)
class Featurizer:
    """Fitted input/target scaling of one model. `features` are the raw window columns it reads,
    `base` those of them turned into per-bar log-returns / log1p (default: all), `derived` the
    derived per-bar inputs (log-range, |return|, volume, trades, calendar); `step` is the bar
    interval in seconds, which places every bar of a window in time for the calendar inputs."""

    features: tuple[str, ...]
    target: str
    window: int
    horizon: int
    input_scaler: Scaler
    target_scaler: Scaler
    base: tuple[str, ...] | None = None
    derived: tuple[str, ...] = ()
    step: int = 0

    @property
    def close_index(self) -> int:
        return self.features.index("close")

    @property
    def input_length(self) -> int:
        return input_length(self.window, self.target)

    @property
    def base_features(self) -> tuple[str, ...]:
        return self.features if self.base is None else self.base

    @property
    def needs_times(self) -> bool:
        return any(name in CALENDAR_INPUTS for name in self.derived)

    def check_windows(self, raw: np.ndarray) -> None:
        if raw.ndim != 3 or raw.shape[1:] != (self.window, len(self.features)):
            raise ValueError(
                f"windows of shape {raw.shape} given; this model takes (n, {self.window}, "
                f"{len(self.features)}) raw {'/'.join(self.features)} windows"
            )

    def _times(self, last: np.ndarray | None, window: int) -> np.ndarray | None:
        if not self.needs_times:
            return None
        if last is None:
            raise ValueError(f"inputs {', '.join(self.derived)} need the open time of each window's last bar")
        return bar_times(last, window, self.step)

    def unscaled(self, raw: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """Unscaled inputs of raw windows; `times` are the open times (n,) of their last bars."""
        return raw_inputs(
            raw, self.features, self.target, base=self.base_features, inputs=self.derived,
            times=self._times(times, raw.shape[1]),
        )

    def inputs(self, raw: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """Scaled model inputs (n, input_length, k) of raw windows (n, window, f) (float32)."""
        return self.input_scaler.transform(self.unscaled(raw, times)).astype(np.float32)

    def bar_inputs(self, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Scaled inputs of a whole gap-free-or-not bar array (T, f) with open times (T,): row t
        is bar t (+1 in log-return mode, whose first bar has no input). A window's inputs are the
        rows of its bars, so a training epoch slices one array instead of featurizing windows."""
        if self.target == "price":
            x = np.asarray(values, dtype=np.float64)
        else:
            x = per_bar_inputs(values, times, self.features, self.base_features, self.derived)
        return np.ascontiguousarray(self.input_scaler.transform(x), dtype=np.float32)

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
            "base": list(self.base_features),
            "inputs": list(self.derived),
            "step": self.step,
            "target": self.target,
            "window": self.window,
            "horizon": self.horizon,
            "input_scaler": self.input_scaler.to_dict(),
            "target_scaler": self.target_scaler.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Featurizer:
        """Read a manifest's description (one written before derived inputs has no base/inputs/step)."""
        try:
            f = cls(
                tuple(d["features"]),
                d["target"],
                int(d["window"]),
                int(d["horizon"]),
                Scaler.from_dict(d["input_scaler"]),
                Scaler.from_dict(d["target_scaler"]),
                tuple(d["base"]) if "base" in d else None,
                tuple(d.get("inputs", ())),
                int(d.get("step", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"featurizer description is malformed: {e}") from None
        if f.target not in TARGETS or "close" not in f.features:
            raise ArtifactError(f"featurizer description {d!r} is invalid")
        unknown = [n for n in f.derived if n not in INPUT_COLUMNS]
        if unknown or not set(f.base_features) <= set(f.features) or (f.needs_times and f.step <= 0):
            raise ArtifactError(f"featurizer description {d!r} is invalid")
        width = input_width(f.base_features, f.derived) if f.target == "log_return" else len(f.features)
        if len(f.input_scaler.offset) != width or len(f.target_scaler.offset) != f.horizon:
            raise ArtifactError("featurizer scalers do not match its features / horizon")
        return f


def fit_featurizer(
    batches: Iterable[tuple[np.ndarray, ...] | tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    features: tuple[str, ...],
    target: str,
    scaler: str,
    window: int,
    horizon: int,
    base: tuple[str, ...] | None = None,
    inputs: tuple[str, ...] = (),
    step: int = 0,
) -> Featurizer:
    """Fit the scalers on training batches (raw windows, future closes[, last-bar open times]) only.

    In `price` mode the target is scaled with the close column's parameters (the study's way),
    so a forecast and its input live on one scale. Log-return targets are divided by their
    root mean square per step and never shifted: 0 stays "no change".
    """
    if inputs and target != "log_return":
        raise ValueError("derived inputs need data.target = 'log_return'")
    close_index = features.index("close")
    unfitted = Featurizer(
        features, target, window, horizon, Scaler("rms", (), ()), Scaler("rms", (), ()), base, inputs, step
    )
    fx, fy = ScalerFitter(scaler), ScalerFitter("rms")
    for raw, future, *rest in batches:
        fx.update(unfitted.unscaled(raw, rest[0] if rest else None))
        if target == "log_return":
            fy.update(raw_targets(raw, future, close_index, target))
    input_scaler = fx.finish()
    if target == "log_return":
        target_scaler = fy.finish()
    else:
        c_off, c_scale = input_scaler.offset[close_index], input_scaler.scale[close_index]
        target_scaler = Scaler(scaler, (c_off,) * horizon, (c_scale,) * horizon)
    return Featurizer(features, target, window, horizon, input_scaler, target_scaler, base, inputs, step)
