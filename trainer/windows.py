"""Bar arrays and zero-copy sliding windows that never straddle a gap.

The study's PastSampler copied every window (n × 272 values); here one strided view of
the bar array serves every window, and a window is named by its *origin*: the index of
the last bar the model sees. A sample at origin `o` needs bars `o-window+1 .. o+horizon`
inside one gap-free run of bars, so gaps are handled by choosing origins, not by
copying or masking data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from db.errors import InputError
from trainer.params import FEATURE_COLUMNS, PRICE_COLUMNS


@dataclass(frozen=True, slots=True)
class BarArray:
    """Bars of one series as float64 columns; `times` are Unix seconds of bar opens, ascending."""

    times: np.ndarray
    values: np.ndarray
    features: tuple[str, ...]
    step: int

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @property
    def close(self) -> np.ndarray:
        return self.values[:, self.features.index("close")]

    def slice(self, start: int, stop: int) -> BarArray:
        """Bars `[start, stop)` as views (no copy)."""
        return BarArray(self.times[start:stop], self.values[start:stop], self.features, self.step)

    def index_of_time(self, unix_seconds: int) -> int:
        """Index of the first bar at or after `unix_seconds`."""
        return int(np.searchsorted(self.times, unix_seconds, side="left"))


def _infer_step(times: np.ndarray) -> int:
    if times.shape[0] < 2:
        raise InputError("need at least 2 bars to infer the bar interval")
    diffs = np.diff(times)
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def bars_from_frame(
    frame: pd.DataFrame,
    features: Sequence[str] = ("close",),
    *,
    step: int | None = None,
    source: str = "bars",
) -> BarArray:
    """Columns `features` of a `db.bars.bars_frame`-shaped frame (UTC DatetimeIndex of open times).

    `source` names the data in error messages (a file path or a series).
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)} (known: {', '.join(FEATURE_COLUMNS)})"
        )
    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    times = np.asarray(index.as_unit("s").asi8, dtype=np.int64)
    values = np.ascontiguousarray(frame.loc[:, list(features)].to_numpy(dtype=np.float64))
    if times.shape[0] and np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0)) + 1
        raise InputError(f"{source}: bar times not strictly ascending at row {bad} ({index[bad]})")
    nan_rows = np.flatnonzero(np.isnan(values).any(axis=1))
    if nan_rows.size:
        col = next(f for j, f in enumerate(features) if np.isnan(values[nan_rows[0], j]))
        raise InputError(f"{source}: {nan_rows.size} bar(s) have no {col!r} (first at {index[nan_rows[0]]})")
    for j, f in enumerate(features):
        if f in PRICE_COLUMNS and np.any(values[:, j] <= 0):
            first = int(np.argmax(values[:, j] <= 0))
            raise InputError(f"{source}: non-positive {f} at {index[first]}")
    return BarArray(times, values, tuple(features), step if step is not None else _infer_step(times))


def fill_short_gaps(bars: BarArray, max_missing: int) -> BarArray:
    """Insert flat bars (prices = previous close, volume and trade count 0) into gaps of at most
    `max_missing` bars; longer gaps stay gaps. Returns `bars` itself when nothing is filled."""
    if max_missing <= 0 or len(bars) < 2:
        return bars
    missing = np.diff(bars.times) // bars.step - 1
    fill_at = np.flatnonzero((missing > 0) & (missing <= max_missing))
    if fill_at.size == 0:
        return bars
    close = bars.close
    flat = np.zeros(len(bars.features))
    pieces_t: list[np.ndarray] = []
    pieces_v: list[np.ndarray] = []
    prev = 0
    for i in fill_at.tolist():
        pieces_t.append(bars.times[prev : i + 1])
        pieces_v.append(bars.values[prev : i + 1])
        m = int(missing[i])
        row = flat.copy()
        for j, f in enumerate(bars.features):
            if f in PRICE_COLUMNS:
                row[j] = close[i]
        pieces_t.append(bars.times[i] + bars.step * np.arange(1, m + 1, dtype=np.int64))
        pieces_v.append(np.repeat(row[None, :], m, axis=0))
        prev = i + 1
    pieces_t.append(bars.times[prev:])
    pieces_v.append(bars.values[prev:])
    return BarArray(np.concatenate(pieces_t), np.concatenate(pieces_v), bars.features, bars.step)


def segments(times: np.ndarray, step: int) -> np.ndarray:
    """Gap-free runs as rows `[start, stop)` of bar indices."""
    n = times.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(times) != step) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [n]))
    return np.stack([starts, stops], axis=1).astype(np.int64)


def valid_origins(times: np.ndarray, step: int, window: int, horizon: int = 0) -> np.ndarray:
    """Origins `o` whose bars `o-window+1 .. o+horizon` all lie in one gap-free run (ascending)."""
    parts = [
        np.arange(start + window - 1, stop - horizon, dtype=np.int64)
        for start, stop in segments(times, step)
        if stop - start >= window + horizon
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def window_view(values: np.ndarray, length: int) -> np.ndarray:
    """All windows of `length` consecutive rows as a read-only view of shape (T-length+1, length, f)."""
    if values.shape[0] < length:
        return np.zeros((0, length, values.shape[1]), dtype=values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # (T-L+1, f, L)
    return view.transpose(0, 2, 1)


@dataclass(frozen=True, slots=True)
class WindowSet:
    """Samples of one bar array at chosen origins: raw input windows and their future closes.

    Nothing is copied until a batch is asked for; a batch is a fancy-indexed copy of
    `batch_size × (window + horizon)` values only.
    """

    bars: BarArray
    origins: np.ndarray
    window: int
    horizon: int

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    @property
    def features(self) -> tuple[str, ...]:
        return self.bars.features

    def _view(self) -> np.ndarray:
        return window_view(self.bars.values, self.window + self.horizon)

    def inputs(self, index: np.ndarray | slice) -> np.ndarray:
        """Raw input windows (n, window, f) of the selected samples."""
        starts = self.origins[index] - self.window + 1
        return np.asarray(self._view()[starts, : self.window])

    def future_close(self, index: np.ndarray | slice) -> np.ndarray:
        """Realised closes (n, horizon) after each selected origin."""
        close = self.bars.close
        o = self.origins[index]
        return close[o[:, None] + np.arange(1, self.horizon + 1)]

    def batch(self, index: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs(index), self.future_close(index)

    def origin_times(self) -> np.ndarray:
        return self.bars.times[self.origins]

    def subset(self, keep: np.ndarray | slice) -> WindowSet:
        return WindowSet(self.bars, self.origins[keep], self.window, self.horizon)


def window_set(bars: BarArray, window: int, horizon: int, *, stride: int = 1) -> WindowSet:
    """Every gap-free sample of `bars` (every `stride`-th one)."""
    origins = valid_origins(bars.times, bars.step, window, horizon)
    return WindowSet(bars, origins[::stride], window, horizon)


def materialised_windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The study's PastSampler: copy every window. Kept only as the benchmark's baseline."""
    n = values.shape[0] - window - horizon + 1
    idx = np.arange(window + horizon)[None, :] + np.arange(n)[:, None]
    both = values[idx]  # (n, window + horizon, f): a full copy
    return both[:, :window], both[:, window:]


def last_window(bars: BarArray, window: int) -> np.ndarray | None:
    """The newest `window` bars as a (window, f) array when they are gap-free, else None:
    what the live loop feeds `predict_batch` (stack several series' windows into one batch)."""
    if len(bars) < window:
        return None
    times = bars.times[-window:]
    if np.any(np.diff(times) != bars.step):
        return None
    return bars.values[-window:]
